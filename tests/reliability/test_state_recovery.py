"""The state dir under corrupt storage: a damaged latest checkpoint falls back to the previous one.

Each corruption (truncate / zero / bit flip at several offsets) of ``state.npz``
must resume from ``state.npz.prev`` with a warning, and the resumed learner
must predict exactly what the previous checkpoint predicted. Both files bad is
one error naming both; a bad ``.prev`` alone does not matter.
"""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
from faults import CORRUPTION_IDS, CORRUPTIONS, corrupt_file
from synthetic_data import CONCEPTS, Clusters, anchor_set, head_params

from edgecvm.device.state import Checkpointer, StateIdentity, load_state, save_state, state_path
from edgecvm.errors import IntegrityError
from edgecvm.learning.learner import Learner, LearnerConfig

IDENTITY = StateIdentity(bundle_sha256="b" * 64, anchors_sha256="a" * 64)
CONFIG = LearnerConfig(replay_bytes=64 * 32 * 2, batch_size=4)
PROBE = Clusters(6, feature_dim=32, seed=7).draw(np.arange(24) % 6)


def _teach(learner: Learner, steps: int, seed: int) -> None:
    clusters = Clusters(6, feature_dim=32, seed=seed)
    for i in range(steps):
        label = i % 6
        learner.observe_features(clusters.draw(np.array([label])), [CONCEPTS[label]])


def _answers(learner: Learner) -> list[str]:
    return [p.concept for p in learner.predict_features(PROBE)]


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory):
    """A state dir with two checkpoints, and the answers and update counts of each."""
    folder = tmp_path_factory.mktemp("state")
    learner = Learner(head_params(), anchor_set(), CONFIG)
    _teach(learner, 30, seed=1)
    save_state(folder, learner, IDENTITY)
    first = (_answers(learner), learner.counters.updates, learner.method.embed(PROBE))
    _teach(learner, 40, seed=2)
    save_state(folder, learner, IDENTITY)
    second = (_answers(learner), learner.counters.updates, learner.method.embed(PROBE))
    return folder, first, second


def _load(folder) -> Learner:
    return load_state(folder, head_params(), anchor_set(), IDENTITY, CONFIG)


@pytest.fixture()
def state_dir(two_checkpoints, tmp_path):
    folder = tmp_path / "state"
    shutil.copytree(two_checkpoints[0], folder)
    return folder


def test_intact_state_resumes_the_latest_checkpoint(state_dir, two_checkpoints):
    learner = _load(state_dir)
    answers, updates, embedded = two_checkpoints[2]
    assert learner.counters.updates == updates
    np.testing.assert_array_equal(learner.method.embed(PROBE), embedded)


@pytest.mark.parametrize(("kind", "frac"), CORRUPTIONS, ids=CORRUPTION_IDS)
def test_corrupt_latest_falls_back_to_previous(state_dir, two_checkpoints, caplog, kind, frac):
    corrupt_file(state_path(state_dir), kind, frac)
    with caplog.at_level(logging.WARNING):
        learner = _load(state_dir)
    answers, updates, embedded = two_checkpoints[1]
    assert learner.counters.updates == updates
    assert _answers(learner) == answers
    np.testing.assert_array_equal(learner.method.embed(PROBE), embedded)
    assert any("state.npz" in r.getMessage() and "previous" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("kind", "frac"), CORRUPTIONS[::2], ids=CORRUPTION_IDS[::2])
def test_corrupt_previous_alone_is_harmless(state_dir, two_checkpoints, kind, frac):
    corrupt_file(state_path(state_dir).with_name("state.npz.prev"), kind, frac)
    learner = _load(state_dir)
    assert learner.counters.updates == two_checkpoints[2][1]


@pytest.mark.parametrize(("kind", "frac"), CORRUPTIONS[::3], ids=CORRUPTION_IDS[::3])
def test_both_corrupt_is_one_error_naming_both(state_dir, kind, frac):
    latest = state_path(state_dir)
    corrupt_file(latest, kind, frac)
    corrupt_file(latest.with_name("state.npz.prev"), kind, 1 - frac)
    with pytest.raises(IntegrityError) as info:
        _load(state_dir)
    message = str(info.value)
    assert "\n" not in message
    assert "state.npz:" in message and "state.npz.prev:" in message


def test_missing_latest_with_previous_resumes_previous(state_dir, two_checkpoints):
    """A crash between making ``.prev`` and the rename leaves only ``.prev``: it must be used."""
    state_path(state_dir).unlink()
    assert _load(state_dir).counters.updates == two_checkpoints[1][1]


def test_restart_removes_partial_checkpoints_left_by_power_loss(state_dir, caplog):
    """A kill mid-write leaves temp files; the next learner on the dir clears them (not the state itself)."""
    partial = [state_dir / ".state.npz.k1ll3d.tmp", state_dir / "state.npz.prev.tmp"]
    for path in partial:
        path.write_bytes(b"half a checkpoint")
    kept = {p.name: p.read_bytes() for p in state_dir.iterdir() if p not in partial}
    learner = _load(state_dir)
    with caplog.at_level(logging.WARNING):
        Checkpointer(state_dir, learner, IDENTITY, every=5)
    assert {p.name: p.read_bytes() for p in state_dir.iterdir()} == kept
    assert any("partial checkpoint" in r.getMessage() for r in caplog.records)
