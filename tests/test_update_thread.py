"""Background head updates: same result as in line, errors surface, checkpoints never see half an update."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic_data import CONCEPTS, Clusters, anchor_set, head_params

from edgecvm.errors import BadInputError
from edgecvm.learner import Learner, LearnerConfig
from edgecvm.state import Checkpointer, StateIdentity, load_state
from edgecvm.update_thread import UpdateThread

F, D = 32, 16
CONFIG = LearnerConfig(replay_bytes=50 * F * 2, batch_size=8)
HEAD = head_params("linear", F, D, conse=True)


def _stream(n: int) -> list[tuple[np.ndarray, str]]:
    labels = np.random.default_rng(0).integers(0, 5, size=n)
    return [(row[None], CONCEPTS[label]) for label, row in zip(labels, Clusters(5, F).draw(labels), strict=True)]


def test_background_updates_equal_inline_updates():
    inline, background = Learner(HEAD, anchor_set(D), CONFIG), Learner(HEAD, anchor_set(D), CONFIG)
    results = []
    with UpdateThread(background) as updates:
        for features, concept in _stream(60):
            inline.observe_features(features, [concept])
            results.append(updates.submit(features, [concept]))
    assert results[0] is None and all(r is not None and not r.skipped for r in results[1:])
    assert [r.updates for r in results[1:]] == list(range(1, 60))
    assert background.counters == inline.counters and background.known == inline.known
    for key, value in inline.method.state_arrays().items():
        np.testing.assert_array_equal(background.method.state_arrays()[key], value)


def test_unknown_concept_fails_in_the_callers_frame_without_queueing():
    learner = Learner(HEAD, anchor_set(D), CONFIG)
    with UpdateThread(learner) as updates:
        with pytest.raises(BadInputError, match="coffee mug"):
            updates.submit(np.ones((1, F), np.float32), ["coffee mugg"])
        assert updates.wait() is None
    assert learner.counters.frames_seen == 0


def test_an_error_inside_the_update_is_raised_by_the_next_wait():
    with UpdateThread(Learner(HEAD, anchor_set(D), CONFIG)) as updates:
        updates.submit(np.ones((1, F + 3), np.float32), ["cat"])
        with pytest.raises(BadInputError, match="do not match"):
            updates.wait()


def test_checkpoints_are_written_by_the_worker_after_whole_updates(tmp_path):
    identity = StateIdentity("b" * 64, "a" * 64)
    learner = Learner(HEAD, anchor_set(D), CONFIG)
    checkpointer = Checkpointer(tmp_path, learner, identity, every=5)
    with UpdateThread(learner, checkpointer) as updates:
        for features, concept in _stream(12):
            updates.submit(features, [concept])
    assert checkpointer.written == 2 and checkpointer.last_saved_update == 10
    reference = Learner(HEAD, anchor_set(D), CONFIG)
    for features, concept in _stream(10):
        reference.observe_features(features, [concept])
    resumed = load_state(tmp_path, HEAD, anchor_set(D), identity, CONFIG)
    probe = Clusters(5, F, seed=3).draw(np.arange(5))
    assert [p.concept for p in resumed.predict_features(probe)] == [p.concept for p in reference.predict_features(probe)]
    np.testing.assert_array_equal(resumed.method.embed(probe), reference.method.embed(probe))
