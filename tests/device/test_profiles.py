"""Device profiles: the shipped ones load, bad ones are refused with one line, and a budget below the plan stops learn."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from device_cli import run_cli
from synthetic_data import anchor_set, head_params

from edgecvm.device.profiles import PROFILE_DIR, available_profiles, learner_config, load_profile
from edgecvm.errors import BadInputError
from edgecvm.learning.learner import Learner

REQUIRED = ("raspberry-pi-4", "raspberry-pi-5", "raspberry-pi-zero-2w", "jetson-nano", "jetson-orin-nano", "host")


def _profile_file(tmp_path: Path, base: str = "host", name: str = "custom", drop: tuple[str, ...] = (),
                  **changes: object) -> Path:
    data = yaml.safe_load((PROFILE_DIR / f"{base}.yaml").read_text())
    data.update(changes)
    for key in drop:
        data.pop(key)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_every_required_profile_ships_and_validates() -> None:
    assert set(REQUIRED) <= set(available_profiles())
    for name in available_profiles():
        profile = load_profile(name)
        assert profile.name == name and profile.memory_budget_mb <= profile.ram_mb
        assert profile.execution_providers[-1] == "CPUExecutionProvider"  # every device can fall back to the CPU
    # every shipped profile, the 100 MB Pi Zero 2 W too, plans the default head within its budget
    assert {load_profile(name).head_method for name in available_profiles()} == {"lda"}
    jetson = load_profile("jetson-nano")
    assert jetson.execution_providers[:2] == ("TensorrtExecutionProvider", "CUDAExecutionProvider")
    assert jetson.precision == "fp16"


def test_invalid_yaml_is_one_line_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("threads: [2\nram_mb: 512\n")
    with pytest.raises(BadInputError, match=r"broken\.yaml: invalid YAML") as err:
        load_profile(str(path))
    assert "\n" not in str(err.value)


def test_a_list_instead_of_a_mapping_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- threads\n- 2\n")
    with pytest.raises(BadInputError, match="expected a mapping of fields"):
        load_profile(str(path))


def test_unknown_key_is_refused_with_a_hint(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match=r"unknown key 'memory_budget'.*did you mean 'memory_budget_mb'"):
        load_profile(str(_profile_file(tmp_path, memory_budget=100)))


@pytest.mark.parametrize(("changes", "message"), [
    ({"memory_budget_mb": -5}, "memory_budget_mb must be > 0, got -5"),
    ({"memory_budget_mb": 0}, "memory_budget_mb must be > 0"),
    ({"memory_budget_mb": 99999}, "exceeds ram_mb"),
    ({"replay_bytes": -1}, "replay_bytes must be >= 0"),
    ({"threads": 8}, r"threads \(8\) exceeds cpu_cores \(2\)"),
    ({"execution_providers": ["CudaExecutionProvider"]}, "did you mean 'CUDAExecutionProvider'"),
    ({"execution_providers": []}, "at least one provider"),
    ({"precision": "fp16"}, "fp16 needs a GPU provider"),
    ({"precision": "bf16"}, "'precision' must be one of 'fp32', 'int8', 'fp16'"),
    ({"memory_budget_mb": "100 MB"}, "'memory_budget_mb' must be int"),
    ({"head_method": "lad"}, "unknown head_method 'lad'; did you mean 'lda'"),
    ({"unknown_tpr": 1.5}, "unknown_tpr must be between 0 and 1"),
])
def test_out_of_range_values_are_refused(tmp_path: Path, changes: dict, message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        load_profile(str(_profile_file(tmp_path, **changes)))


def test_missing_field_and_name_field_are_refused(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="missing required key 'memory_budget_mb'"):
        load_profile(str(_profile_file(tmp_path, drop=("memory_budget_mb",))))
    with pytest.raises(BadInputError, match="'name' is not a field"):
        named = tmp_path / "named.yaml"
        named.write_text(_profile_file(tmp_path).read_text() + "name: other\n")
        load_profile(str(named))


def test_unknown_profile_name_suggests_the_closest(capsys) -> None:
    run = run_cli(capsys, "profiles", "show", "raspbery-pi-5")
    assert run.code == 2 and "did you mean 'raspberry-pi-5'" in run.stderr and len(run.stderr.splitlines()) == 1


def test_profiles_list_and_show(capsys) -> None:
    listing = run_cli(capsys, "profiles", "list")
    assert listing.code == 0 and all(name in listing.stdout for name in REQUIRED)
    as_json = run_cli(capsys, "profiles", "list", "--json")
    assert {p["name"] for p in json.loads(as_json.stdout)} == set(available_profiles())
    shown = run_cli(capsys, "profiles", "show", "raspberry-pi-zero-2w", "--json")
    data = json.loads(shown.stdout)
    assert data["memory_budget_mb"] == 100 and data["ram_mb"] == 512 and data["execution_providers"] == [
        "CPUExecutionProvider"]
    text = run_cli(capsys, "profiles", "show", "jetson-orin-nano")
    assert "TensorrtExecutionProvider, CUDAExecutionProvider, CPUExecutionProvider" in text.stdout


def test_a_profile_head_method_is_the_learner_default_and_an_explicit_one_wins(tmp_path: Path) -> None:
    profile = load_profile(_profile_file(tmp_path, head_method="sgd"))
    head, anchors = head_params("linear", 32, 16), anchor_set(16)
    assert Learner(head, anchors, learner_config(profile)).method.name == "sgd"
    assert Learner(head, anchors, learner_config(profile, method="lda")).method.name == "lda"


def test_a_budget_below_the_plan_makes_learn_refuse_to_start_with_exit_3(capsys, tmp_path: Path, test_bundle: Path,
                                                                        samples_dir: Path) -> None:
    # The Pi Zero 2 W profile at the bundle's size, with a budget below the memory plan.
    tight = _profile_file(tmp_path, base="raspberry-pi-zero-2w", name="zero-tight", resolution=224, precision="fp32",
                          memory_budget_mb=40)
    run = run_cli(capsys, "learn", "--bundle", test_bundle, "--stream", samples_dir / "val", "--state",
                  tmp_path / "state", "--profile", tight)
    assert run.code == 3
    assert "exceeds the 40 MB budget of profile zero-tight" in run.stderr and "total" in run.stderr
    assert not (tmp_path / "state" / "state.npz").exists()


def test_an_install_without_its_profiles_says_so_instead_of_listing_none(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="no device profiles in .*installation is incomplete"):
        available_profiles(tmp_path)
    with pytest.raises(BadInputError, match="installation is incomplete"):
        load_profile("host", tmp_path)
