"""Open-set answers survive a checkpoint: the resumed learner says "unknown" for the same frames, by the same margin."""

from __future__ import annotations

import numpy as np
from synthetic_data import CONCEPTS, Clusters, anchor_set, head_params

from edgecvm.device.state import StateIdentity, load_state, save_state
from edgecvm.formats.integrity import load_container, save_container
from edgecvm.learning.learner import Learner, LearnerConfig

F, D = 32, 16
IDENTITY = StateIdentity(bundle_sha256="b" * 64, anchors_sha256="a" * 64)
CONFIG = LearnerConfig(replay_bytes=600 * F * 2, batch_size=8)
HEAD = head_params("linear", F, D, conse=True)
ANCHORS = anchor_set(D)
CLUSTERS = Clusters(len(CONCEPTS), F, seed=3)
PROBE = CLUSTERS.draw(np.arange(len(CONCEPTS)).repeat(10))


def _taught(n: int = 500) -> Learner:
    learner = Learner(HEAD, ANCHORS, CONFIG)
    labels = np.random.default_rng(0).integers(0, 6, size=n)
    for label, row in zip(labels, CLUSTERS.draw(labels), strict=True):
        learner.observe_features(row[None], [CONCEPTS[label]])
    return learner


def _answers(learner: Learner, vocab: str) -> list[tuple[str, bool, float | None]]:
    return [(p.concept, p.unknown, p.known_margin) for p in learner.predict_features(PROBE, vocab=vocab)]


def test_unknown_answers_and_their_threshold_survive_checkpoint_and_resume(tmp_path):
    live = _taught()
    save_state(tmp_path, live, IDENTITY)
    resumed = load_state(tmp_path, HEAD, ANCHORS, IDENTITY, CONFIG)
    assert resumed.open_set_threshold() == live.open_set_threshold() is not None
    for vocab in ("known", "all"):
        before = _answers(live, vocab)
        assert _answers(resumed, vocab) == before
    assert any(unknown for _, unknown, _ in _answers(live, "known"))


def test_a_state_saved_without_open_set_calibration_answers_forced_until_the_next_blend_fit(tmp_path):
    """The calibration is optional in the state file: without it the device answers a taught concept, as before."""
    save_state(tmp_path, _taught(), IDENTITY)
    path = tmp_path / "state.npz"
    arrays, meta = load_container(path, "edgecvm.state", (1,), "")
    save_container(path, "edgecvm.state", 1, {k: v for k, v in arrays.items() if ".openset." not in k}, meta)
    resumed = load_state(tmp_path, HEAD, ANCHORS, IDENTITY, CONFIG)
    assert resumed.open_set_threshold() is None
    assert not any(unknown for _, unknown, _ in _answers(resumed, "known"))
    labels = np.random.default_rng(1).integers(0, 6, size=300)
    for label, row in zip(labels, CLUSTERS.draw(labels), strict=True):
        resumed.observe_features(row[None], [CONCEPTS[label]])
    assert resumed.open_set_threshold() is not None
