"""Corrupt storage seen by the commands: a damaged real bundle, anchor file or state dir.

Every persisted file of a real export (backbone.onnx, head.npz, the anchor
file, manifest.json) and of a real state dir is truncated, zeroed and
bit-flipped. `edgecvm predict` / `edgecvm anchors show` must exit 2 with one
`edgecvm: error:` line naming the file, never a traceback; a damaged latest
state is instead replaced by the previous checkpoint, with a warning, and the
answers are exactly those of that checkpoint. Most cases run through
``edgecvm.cli.main`` in-process (any exception other than EdgeCVMError would
escape it and fail the test); one per file type runs as a real subprocess.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from faults import CORRUPTION_IDS, CORRUPTIONS, corrupt_file, one_line_error
from harness import SAMPLES, run_edgecvm

from edgecvm import resources
from edgecvm.cli import main

BUNDLE_FILES = ("backbone.onnx", "backbone.weights", "head.npz", "tiny-imagenet-200.anchors.npz", "manifest.json")
PROBE = SAMPLES / "val" / "goldfish"


def _bundle_with_corrupt(bundle: Path, tmp_path: Path, name: str, kind: str, frac: float) -> Path:
    """A copy of ``bundle`` (unchanged files symlinked) whose ``name`` is damaged."""
    copy = tmp_path / "bundle"
    copy.mkdir()
    for src in bundle.iterdir():
        if src.name == name:
            shutil.copyfile(src, copy / name)
            corrupt_file(copy / name, kind, frac)
        else:
            (copy / src.name).symlink_to(src)
    return copy


def _predict(bundle: Path, profile: Path, state: Path | None = None) -> list[str]:
    args = ["predict", "--bundle", str(bundle), "--stream", str(PROBE), "--profile", str(profile), "--json"]
    return args + (["--state", str(state)] if state else [])


def _anchor_name(bundle: Path) -> str:
    return next(p.name for p in bundle.iterdir() if p.name.endswith(".anchors.npz"))


@pytest.mark.parametrize("name", BUNDLE_FILES)
@pytest.mark.parametrize(("kind", "frac"), CORRUPTIONS, ids=CORRUPTION_IDS)
def test_corrupt_bundle_file_is_one_named_error(rel_bundle, rel_profile, tmp_path, capsys, name, kind, frac):
    name = _anchor_name(rel_bundle) if name.endswith(".anchors.npz") else name
    bundle = _bundle_with_corrupt(rel_bundle, tmp_path, name, kind, frac)
    rc = main(_predict(bundle, rel_profile))
    out, err = capsys.readouterr()
    if name == "manifest.json" and rc == 0:  # only meaningless bytes changed (e.g. the final newline)
        assert (bundle / name).read_text().strip() == (rel_bundle / name).read_text().strip()
        return
    assert rc == 2, err
    assert name in one_line_error(err)
    assert not out  # no prediction printed from a damaged bundle


@pytest.mark.parametrize("name", BUNDLE_FILES)
def test_corrupt_bundle_in_a_real_process(rel_bundle, rel_profile, tmp_path, name):
    name = _anchor_name(rel_bundle) if name.endswith(".anchors.npz") else name
    bundle = _bundle_with_corrupt(rel_bundle, tmp_path, name, "bitflip", 0.5)
    done = run_edgecvm(*_predict(bundle, rel_profile))
    assert done.returncode == 2
    assert name in one_line_error(done.stderr)


@pytest.mark.parametrize(("kind", "frac"), CORRUPTIONS, ids=CORRUPTION_IDS)
def test_corrupt_standalone_anchor_file(tmp_path, capsys, kind, frac):
    path = tmp_path / "tiny-imagenet-200.anchors.npz"
    shutil.copyfile(resources.anchors_file(path.name), path)
    corrupt_file(path, kind, frac)
    assert main(["anchors", "show", str(path)]) == 2
    assert path.name in one_line_error(capsys.readouterr().err)


@pytest.fixture(scope="module")
def learned_state(rel_bundle, rel_profile, tmp_path_factory):
    """A state dir with two checkpoints (latest and .prev), and what each one predicts on the probe images."""
    state = tmp_path_factory.mktemp("learned") / "state"
    done = run_edgecvm("learn", "--bundle", rel_bundle, "--stream", SAMPLES / "train", "--limit", "40", "--shuffle",
                       "3", "--state", state, "--profile", rel_profile, "--checkpoint-every", "20")
    assert done.returncode == 0, done.stderr
    answers = {}
    for which in ("state.npz", "state.npz.prev"):
        alone = tmp_path_factory.mktemp("alone") / "state"
        alone.mkdir()
        shutil.copyfile(state / which, alone / "state.npz")
        done = run_edgecvm(*_predict(rel_bundle, rel_profile, alone))
        assert done.returncode == 0, done.stderr
        answers[which] = done.stdout.splitlines()[:-1]  # frame lines; the summary holds timings
    assert answers["state.npz"] != answers["state.npz.prev"]  # the two checkpoints are distinguishable
    return state, answers


def _state_copy(learned: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "state"
    shutil.copytree(learned, copy)
    return copy


@pytest.mark.parametrize(("kind", "frac"), CORRUPTIONS, ids=CORRUPTION_IDS)
def test_corrupt_latest_state_answers_like_the_previous_checkpoint(
    rel_bundle, rel_profile, learned_state, tmp_path, capsys, kind, frac
):
    state = _state_copy(learned_state[0], tmp_path)
    corrupt_file(state / "state.npz", kind, frac)
    rc = main(_predict(rel_bundle, rel_profile, state))
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert out.splitlines()[:-1] == learned_state[1]["state.npz.prev"]
    assert json.loads(out.splitlines()[-1])["bad_frames"] == 0


@pytest.mark.parametrize(("kind", "frac"), CORRUPTIONS[::2], ids=CORRUPTION_IDS[::2])
def test_both_states_corrupt_is_one_error_naming_both(rel_bundle, rel_profile, learned_state, tmp_path, capsys,
                                                       kind, frac):
    state = _state_copy(learned_state[0], tmp_path)
    corrupt_file(state / "state.npz", kind, frac)
    corrupt_file(state / "state.npz.prev", kind, frac)
    assert main(_predict(rel_bundle, rel_profile, state)) == 2
    line = one_line_error(capsys.readouterr().err)
    assert "state.npz:" in line and "state.npz.prev:" in line


def test_corrupt_latest_state_warns_in_a_real_process(rel_bundle, rel_profile, learned_state, tmp_path):
    state = _state_copy(learned_state[0], tmp_path)
    corrupt_file(state / "state.npz", "truncate", 0.6)
    done = run_edgecvm(*_predict(rel_bundle, rel_profile, state))
    assert done.returncode == 0 and "Traceback" not in done.stderr
    warning = [line for line in done.stderr.splitlines() if "state.npz" in line and "previous" in line]
    assert len(warning) == 1, done.stderr
