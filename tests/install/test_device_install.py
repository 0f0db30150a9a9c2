"""The wheel as a device gets it: built from this checkout, installed into a fresh venv with the device
dependencies only (no torch, onnx, sentence-transformers, opencv), run from a directory outside the checkout.

Catches "the installed package cannot find its profiles / recipes / anchors / samples": everything the
commands need must come from the installed package (edgecvm.resources), nothing from the source tree.
One session builds the wheel and the venv once: ~55 s on 2 idle cores with the pip cache warm.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import zipfile
from pathlib import Path

import pytest
from device_install import (
    FORBIDDEN_MODULES,
    REPO,
    Done,
    build_wheel,
    clean_env,
    copy_samples,
    copy_source,
    device_requirements,
    readme_python_example,
    requirement_name,
    run,
    shipped_profiles,
    shipped_resource_files,
)

pytestmark = pytest.mark.slow

PI4 = "raspberry-pi-4"  # asks a 160 px int8 bundle; learn refuses a 224 px one (resolution mismatch, exit 2)


@pytest.fixture(scope="session")
def device_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The "device": venv, bundles and images side by side, all outside the checkout."""
    return tmp_path_factory.mktemp("device")


@pytest.fixture(scope="session")
def device_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    build = tmp_path_factory.mktemp("wheel")
    return build_wheel(copy_source(build / "src"), build / "dist", cwd=build)


@pytest.fixture(scope="session")
def device_venv(device_root: Path, device_wheel: Path) -> Path:
    """A fresh venv (no system site-packages) with the wheel and the [project] dependencies, nothing else.

    The dev venv's pip installs into it (``pip --python``): no ensurepip run, no bytecode compiled up front,
    ~5 s instead of ~13 s; the normal pip cache applies.
    """
    if importlib.util.find_spec("venv") is None:
        pytest.skip("python -m venv is unavailable (no venv module in this Python)")
    venv = device_root / "venv"
    made = run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=device_root, timeout=180)
    if made.code != 0:
        pytest.skip(f"python -m venv is unavailable: {made.stderr.strip()[-500:]}")
    installed = run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--quiet",
                     "--no-compile", device_wheel, *device_requirements()],
                    cwd=device_root, env=clean_env(venv), timeout=600)
    assert installed.code == 0, "installing the wheel into the device venv failed: " + installed.explain()
    return venv


@pytest.fixture(scope="session")
def device_bundle(test_bundle: Path, device_root: Path) -> Path:
    """The session's 224 px fp32 bundle, copied next to the venv."""
    return Path(shutil.copytree(test_bundle, device_root / "bundles" / "lite0-224"))


@pytest.fixture(scope="session")
def pi4_bundle(device_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 160 px int8 bundle as the raspberry-pi-4 profile asks, exported by the dev venv (~15-20 s)."""
    from edgecvm import resources
    from edgecvm.offline.export import export_bundle

    calibration = copy_samples(tmp_path_factory.mktemp("calibration"), "train", per_class=4)
    out = device_root / "bundles" / "lite0-160-int8"
    export_bundle(resources.recipe("lite0-160.yaml"), resources.anchors_file("tiny-imagenet-200.anchors.npz"), out,
                  head_init="conse", quantize="int8", calibration=calibration, log=lambda _msg: None)
    return out


@pytest.fixture(scope="session")
def device_encoder_bundle(encoder_bundle: Path, device_root: Path) -> Path:
    """The session's bundle with the int8 text encoder, copied next to the venv."""
    return Path(shutil.copytree(encoder_bundle, device_root / "bundles" / "lite0-224-text"))


@pytest.fixture(scope="session")
def device_samples(device_root: Path) -> Path:
    """A copy of the shipped 10-concept sample: train/ (20 of the 40 per concept) and val/ (all 10 per concept)."""
    samples = device_root / "samples"
    copy_samples(samples / "train", "train", per_class=20)
    copy_samples(samples / "val", "val", per_class=None)
    return samples


def edgecvm(venv: Path, cwd: Path, *args: object, timeout: float = 300) -> Done:
    """The installed console script, as a user on the device runs it; must exit 0."""
    assert REPO not in cwd.resolve().parents, f"{cwd} is inside the checkout"
    done = run([venv / "bin" / "edgecvm", *map(str, args)], cwd=cwd, env=clean_env(venv), timeout=timeout)
    assert done.code == 0, done.explain()
    return done


def summary(done: Done) -> dict:
    records = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    found = [r for r in records if r.get("event") == "summary"]
    assert len(found) == 1, f"expected one summary line: {done.explain()}"
    return found[0]


def test_wheel_ships_every_resource(device_wheel: Path) -> None:
    with zipfile.ZipFile(device_wheel) as wheel:
        names = set(wheel.namelist())
    missing = [name for name in shipped_resource_files() if name not in names]
    assert not missing, f"{device_wheel.name} lacks {len(missing)} shipped data files: {missing[:20]}"


def test_device_venv_has_only_device_dependencies(device_venv: Path, tmp_path: Path) -> None:
    names = [requirement_name(r) for r in device_requirements()]
    probe = (
        "import importlib.metadata as md, importlib.util as u, json, sys\n"
        "import edgecvm, edgecvm.resources as r\n"
        "need, forbidden = sys.argv[1].split(','), sys.argv[2].split(',')\n"
        "def missing(name):\n"
        "    try:\n"
        "        md.version(name)\n"
        "    except md.PackageNotFoundError:\n"
        "        return True\n"
        "    return False\n"
        "print(json.dumps({'missing': [n for n in need if missing(n)],\n"
        "                  'present': [m for m in forbidden if u.find_spec(m) is not None],\n"
        "                  'package': edgecvm.__file__, 'profiles': str(r.profiles_dir())}))\n"
    )
    done = run([device_venv / "bin" / "python", "-c", probe, ",".join(names), ",".join(FORBIDDEN_MODULES)],
               cwd=tmp_path, env=clean_env(device_venv), timeout=120)
    assert done.code == 0, done.explain()
    found = json.loads(done.stdout)
    assert found["missing"] == [], f"device dependencies not installed: {found['missing']}"
    assert found["present"] == [], f"workstation-only packages importable in the device venv: {found['present']}"
    venv = device_venv.resolve()
    for key in ("package", "profiles"):
        assert venv in Path(found[key]).resolve().parents, f"{key} {found[key]} is not inside the venv {venv}"


def test_profiles_list(device_venv: Path, tmp_path: Path) -> None:
    done = edgecvm(device_venv, tmp_path, "profiles", "list")
    missing = [name for name in shipped_profiles() if name not in done.stdout]
    assert len(shipped_profiles()) == 6 and not missing, f"profiles missing from `profiles list`: {missing}\n{done.stdout}"
    assert str(REPO) not in done.stdout, f"profiles listed from the checkout, not the installed package:\n{done.stdout}"


def test_predict_default_profile(device_venv: Path, device_bundle: Path, device_samples: Path, tmp_path: Path) -> None:
    done = edgecvm(device_venv, tmp_path, "predict", "--bundle", device_bundle, "--stream", device_samples / "val")
    assert "accuracy" in done.stdout, done.explain()


def test_learn_then_predict_on_raspberry_pi_4(device_venv: Path, pi4_bundle: Path, device_samples: Path,
                                              tmp_path: Path) -> None:
    state = tmp_path / "state"
    learned = summary(edgecvm(device_venv, tmp_path, "learn", "--bundle", pi4_bundle, "--stream",
                              device_samples / "train", "--state", state, "--profile", PI4, "--json"))
    assert learned["frames"] == 200 and len(learned["known"]) == 10, learned
    # predict needs the profile too: its default (host) runs at 224 px, the bundle at 160 px.
    predicted = summary(edgecvm(device_venv, tmp_path, "predict", "--bundle", pi4_bundle, "--state", state,
                                "--stream", device_samples / "val", "--profile", PI4, "--json"))
    assert predicted["labelled"] == 100 and predicted["vocab_size"] == 10, predicted
    assert predicted["accuracy"] >= 0.6, f"accuracy {predicted['accuracy']:.2f} on 10 taught concepts: {predicted}"


def test_learn_a_concept_name_the_anchor_file_lacks_then_predict_it(device_venv: Path, device_encoder_bundle: Path,
                                                                   device_samples: Path, tmp_path: Path) -> None:
    """The bundle's text encoder embeds "garden gnome" with tokenizers + ONNX Runtime only (no torch)."""
    state, train = tmp_path / "state", device_samples / "train"
    gnomes = tmp_path / "gnomes" / "garden gnome"  # the sample has no gnomes: its lemons stand in for one
    shutil.copytree(device_samples / "val" / "lemon", gnomes)
    done = edgecvm(device_venv, tmp_path, "learn", "--bundle", device_encoder_bundle, "--stream", train / "lemon",
                   "--label", "garden gnome", "--state", state, "--json")
    assert summary(done)["known"] == ["garden gnome"] and "new concept 'garden gnome'" in done.stderr, done.explain()
    learned = summary(edgecvm(device_venv, tmp_path, "learn", "--bundle", device_encoder_bundle, "--stream",
                              train / "goldfish", "--label", "goldfish", "--state", state, "--json"))
    assert learned["known"] == ["garden gnome", "goldfish"], learned
    predicted = summary(edgecvm(device_venv, tmp_path, "predict", "--bundle", device_encoder_bundle, "--state", state,
                                "--stream", gnomes.parent, "--json"))
    assert predicted["labelled"] == 10 and predicted["per_concept"]["garden gnome"]["correct"] >= 7, predicted


def test_readme_python_example(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    try:
        code = readme_python_example((REPO / "README.md").read_text())
    except LookupError as exc:
        pytest.skip(f"{exc}: the README has no marked Python API example")
    venv: Path = request.getfixturevalue("device_venv")
    shutil.copytree(request.getfixturevalue("device_bundle"), tmp_path / "bundle")
    copy_samples(tmp_path / "photos", "val", per_class=2)
    (tmp_path / "readme_example.py").write_text(code)
    done = run([venv / "bin" / "python", "readme_example.py"], cwd=tmp_path, env=clean_env(venv), timeout=300)
    assert done.code == 0, f"the README's Python example failed in the device venv:\n{code}\n{done.explain()}"


def test_every_command_is_listed_and_an_offline_one_names_its_extra(device_venv: Path, tmp_path: Path) -> None:
    """No command disappears on a device; running one whose extra is missing is one line naming the extra."""
    from edgecvm.cli import COMMANDS

    listed = edgecvm(device_venv, tmp_path, "--help").stdout
    assert all(f"    {name}" in listed for name in COMMANDS), listed
    assert "--recipe" in edgecvm(device_venv, tmp_path, "export", "--help").stdout  # its help needs no torch
    done = run([device_venv / "bin" / "edgecvm", "export", "--recipe", "lite0-224", "--anchors", "tiny-imagenet-200",
                "--out", tmp_path / "bundle"], cwd=tmp_path, env=clean_env(device_venv))
    assert done.code == 2 and "Traceback" not in done.stderr, done.explain()
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("edgecvm: error: `edgecvm export` needs torch") and "pip install 'edgecvm[export]'" in line
