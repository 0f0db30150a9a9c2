"""`edgecvm state merge`: devices' state dirs merged into the first, which then knows what each was taught,
keeps learning, and never counts a sample twice; inputs that do not merge are refused by name, nothing written."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from device_cli import run_cli, write_profile
from synthetic_data import Clusters

import edgecvm
from edgecvm.device.state import StateIdentity, load_state, save_state, state_path
from edgecvm.formats.bundle import load_bundle, load_head_and_anchors
from edgecvm.learning.fleet import own_statistics
from edgecvm.learning.learner import Learner, LearnerConfig


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, test_bundle: Path) -> dict:
    """Three devices' state dirs, each taught two of six concepts (one shared by two devices), and an sgd one."""
    root = tmp_path_factory.mktemp("fleet")
    profile = write_profile(root)
    head, anchors = load_head_and_anchors(load_bundle(str(test_bundle)))
    names = list(anchors.names[:6])
    clusters = Clusters(6, 1280, seed=0)
    lessons = {"a": [0, 1], "b": [2, 3], "c": [3, 4, 5], "sgd": [0]}
    for device, concepts in lessons.items():  # taught features, as open_device's teach_features does, and saved
        learner = Learner(head, anchors, LearnerConfig(method="sgd" if device == "sgd" else "lda"))
        labels = np.repeat(concepts, 12)
        learner.observe_features(clusters.draw(labels), [names[i] for i in labels])
        save_state(root / device, learner, _identity(test_bundle))
    test_y = np.repeat(np.arange(6), 5)
    return {"root": root, "profile": profile, "names": names, "test_x": clusters.draw(test_y), "test_y": test_y}


def _identity(bundle: Path) -> StateIdentity:
    return StateIdentity.of_bundle(load_bundle(str(bundle)))


def _copy(fleet: dict, tmp_path: Path, *devices: str) -> list[Path]:
    copies = []
    for device in devices:
        shutil.copytree(fleet["root"] / device, tmp_path / device)
        copies.append(tmp_path / device)
    return copies


def test_the_first_device_learns_what_every_device_was_taught(capsys, fleet: dict, tmp_path: Path, test_bundle: Path):
    a, b, c = _copy(fleet, tmp_path, "a", "b", "c")
    run = run_cli(capsys, "state", "merge", "--bundle", test_bundle, "--profile", fleet["profile"], a, b, c,
                  "--out", a, "--json")
    assert run.code == 0, run.stderr
    (report,) = run.records
    assert report == {"out": str(a), "own_samples": {str(a): 24, str(b): 24, str(c): 36}, "samples": 84,
                      "concepts": 6}
    assert state_path(a).with_name("state.npz.prev").is_file()  # the device's previous checkpoint is kept

    with edgecvm.open_device(test_bundle, profile=fleet["profile"], state=a) as device:
        assert sorted(device.known) == sorted(fleet["names"])
        answers = [p.concept for p in device.predict_features(fleet["test_x"])]
        assert answers == [fleet["names"][i] for i in fleet["test_y"]]
        device.teach_features(fleet["test_x"][:5], fleet["names"][0])  # learning goes on after the merge
        assert own_statistics(device.learner).n == 29 and device.learner.method.stats.n == 89

    again = run_cli(capsys, "state", "merge", "--bundle", test_bundle, "--profile", fleet["profile"], a, b, c,
                    "--out", a, "--json")  # a repeated merge: nothing counted twice
    assert again.code == 0, again.stderr
    assert again.records[0]["samples"] == 89


def test_the_merge_can_go_to_a_new_dir_and_says_what_it_did(capsys, fleet: dict, tmp_path: Path, test_bundle: Path):
    a, b = _copy(fleet, tmp_path, "a", "b")
    before = state_path(a).read_bytes()
    run = run_cli(capsys, "state", "merge", "--bundle", test_bundle, "--profile", fleet["profile"], f"{a}/", b,
                  "--out", tmp_path / "merged")  # a dir typed with a trailing slash is the same dir
    assert run.code == 0, run.stderr
    assert run.stdout.strip() == f"{tmp_path / 'merged'}: 4 concepts from 48 samples of 2 devices (24 of them taught to {a} itself)"
    assert state_path(a).read_bytes() == before


@pytest.mark.parametrize("case", ["another bundle", "sgd head", "corrupt", "given twice", "out holds another state",
                                  "no state", "one input"])
def test_inputs_that_do_not_merge_are_refused_by_name_and_nothing_is_written(capsys, fleet: dict, tmp_path: Path,
                                                                             test_bundle: Path, case: str):
    a, b, c, sgd = _copy(fleet, tmp_path, "a", "b", "c", "sgd")
    inputs, out, named = [a, b, c], a, None
    if case == "another bundle":  # a sound state file, learned with another bundle
        learner = load_state(b, *load_head_and_anchors(load_bundle(str(test_bundle))), _identity(test_bundle))
        save_state(b, learner, StateIdentity("0" * 64, _identity(test_bundle).anchors_sha256))
        named = f"{state_path(b)}: this state was learned with a different bundle"
    elif case == "sgd head":
        inputs, named = [a, b, sgd], f"{sgd}: only the 'lda' head"
    elif case == "corrupt":
        data = bytearray(state_path(b).read_bytes())
        data[len(data) // 2] ^= 0xFF
        state_path(b).write_bytes(bytes(data))
        named = str(state_path(b))
    elif case == "given twice":
        inputs, named = [a, b, tmp_path / "b" / ".." / "b"], "given twice"
    elif case == "out holds another state":
        out, named = c, f"{c}: already holds a state"
    elif case == "no state":
        inputs, named = [a, b, tmp_path / "nothing"], f"{tmp_path / 'nothing'}: no learner state"
    else:
        inputs, named = [a], "at least two"
    files = {p: state_path(p).read_bytes() for p in (a, b, c)}
    run = run_cli(capsys, "state", "merge", "--bundle", test_bundle, "--profile", fleet["profile"], *inputs,
                  "--out", out)
    assert run.code == 2 and run.stdout == ""
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("edgecvm: error: ") and named in run.stderr
    assert {p: state_path(p).read_bytes() for p in (a, b, c)} == files


def test_show_says_what_a_device_knows_before_and_after_a_merge(capsys, fleet: dict, tmp_path: Path,
                                                                 test_bundle: Path):
    a, b = _copy(fleet, tmp_path, "a", "b")
    names = fleet["names"]
    run = run_cli(capsys, "state", "show", a, "--json")
    assert run.code == 0, run.stderr
    (shown,) = run.records
    assert shown["head"] == "lda" and shown["merged_samples"] is None and shown["resumes"] is None
    assert shown["concepts"] == [{"name": names[0], "taught_here": 12, "in_statistics": 12},
                                 {"name": names[1], "taught_here": 12, "in_statistics": 12}]
    assert shown["updates"] == 1 and shown["frames_seen"] == 24 and shown["replay_samples"] == 24
    assert shown["read_from"] == str(state_path(a)) and shown["latest_unusable"] is None
    assert shown["bundle_sha256"] == _identity(test_bundle).bundle_sha256

    assert run_cli(capsys, "state", "merge", "--bundle", test_bundle, "--profile", fleet["profile"], a, b,
                   "--out", a).code == 0
    run = run_cli(capsys, "state", "show", a, "--json", "--bundle", test_bundle, "--profile", fleet["profile"])
    (merged,) = run.records
    assert merged["merged_samples"] == 48 and merged["own_samples"] == 24 and merged["previous_checkpoint"]
    assert {c["name"]: (c["taught_here"], c["in_statistics"]) for c in merged["concepts"]} == {
        names[0]: (12, 12), names[1]: (12, 12), names[2]: (0, 12), names[3]: (0, 12)}
    assert merged["resumes"]["profile"] == fleet["profile"].stem and merged["resumes"]["memory_plan_mb"] > 0
    text = run_cli(capsys, "state", "show", a, "--bundle", test_bundle, "--profile", fleet["profile"]).stdout
    assert "merged with other devices: 24 of the statistics' 48 samples were taught here" in text
    assert f"resumes with {test_bundle}" in text and names[3] in text


def test_show_reads_the_previous_checkpoint_when_the_latest_is_unusable_and_names_what_is_wrong(
        capsys, fleet: dict, tmp_path: Path, test_bundle: Path):
    assert "no learner state here" in run_cli(capsys, "state", "show", tmp_path / "empty").stderr
    (sgd,) = _copy(fleet, tmp_path, "sgd")
    (shown,) = run_cli(capsys, "state", "show", sgd, "--json").records
    assert shown["head"] == "sgd" and shown["concepts"][0]["in_statistics"] is None  # no class statistics
    # a state of another bundle: shown from its own file, refused when checked against this bundle
    head, anchors = load_head_and_anchors(load_bundle(str(test_bundle)))
    stranger = tmp_path / "stranger"
    save_state(stranger, Learner(head, anchors), StateIdentity(bundle_sha256="b" * 64, anchors_sha256="a" * 64))
    assert run_cli(capsys, "state", "show", stranger).code == 0
    refused = run_cli(capsys, "state", "show", stranger, "--bundle", test_bundle)
    assert refused.code == 2 and "learned with a different bundle (sha256 bbbbbbbbbbbb" in refused.stderr

    (a,) = _copy(fleet, tmp_path, "a")
    save_state(a, load_state(a, head, anchors, _identity(test_bundle)), _identity(test_bundle))  # a second one
    latest = state_path(a)
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])  # power lost mid-copy
    (shown,) = run_cli(capsys, "state", "show", a, "--json").records
    assert shown["read_from"] == f"{latest}.prev" and str(latest) in shown["latest_unusable"]
    assert len(shown["concepts"]) == 2
    latest.with_name("state.npz.prev").write_bytes(b"garbage")
    run = run_cli(capsys, "state", "show", a)
    assert run.code == 2 and "both state files are unusable" in run.stderr and "Traceback" not in run.stderr
