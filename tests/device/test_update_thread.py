"""Background head updates: same result as in line, errors surface, checkpoints never see half an update."""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np
import pytest
from synthetic_data import CONCEPTS, Clusters, anchor_set, head_params

from edgecvm.device.state import Checkpointer, StateIdentity, load_state
from edgecvm.device.update_thread import UpdateThread
from edgecvm.errors import BadInputError
from edgecvm.learning.learner import Learner, LearnerConfig

F, D = 32, 16
CONFIG = LearnerConfig(replay_bytes=50 * F * 2, batch_size=8)
HEAD = head_params("linear", F, D, conse=True)


def _stream(n: int) -> list[tuple[np.ndarray, str]]:
    labels = np.random.default_rng(0).integers(0, 5, size=n)
    return [(row[None], CONCEPTS[label]) for label, row in zip(labels, Clusters(5, F).draw(labels), strict=True)]


@pytest.mark.parametrize("depth", [1, 8])
@pytest.mark.parametrize("method", ["sgd", "lda"])
def test_background_updates_equal_inline_updates(depth: int, method: str):
    config = dataclasses.replace(CONFIG, method=method)
    inline, background = Learner(HEAD, anchor_set(D), config), Learner(HEAD, anchor_set(D), config)
    done = []
    with UpdateThread(background, depth=depth) as updates:
        for i, (features, concept) in enumerate(_stream(60)):
            inline.observe_features(features, [concept])
            returned = updates.submit(features, [concept], f"frame {i}")
            assert len(updates._queue) <= depth
            done += returned
        done += updates.wait()
    assert [origin for origin, _ in done] == [f"frame {i}" for i in range(60)]  # every result once, in stream order
    assert [r.updates for _, r in done] == list(range(1, 61)) and not any(r.skipped for _, r in done)
    assert background.counters == inline.counters and background.known == inline.known
    for key, value in inline.method.state_arrays().items():
        np.testing.assert_array_equal(background.method.state_arrays()[key], value)


def test_submit_blocks_only_when_the_queue_is_full():
    learner = Learner(HEAD, anchor_set(D), CONFIG)
    gate = threading.Event()
    original = learner.observe_features
    learner.observe_features = lambda *a: (gate.wait(), original(*a))[1]  # type: ignore[method-assign]
    with UpdateThread(learner, depth=3) as updates:
        stream = _stream(4)
        for features, concept in stream[:3]:  # the first is running, two wait: none finished, nothing blocks
            assert updates.submit(features, [concept]) == []
        threading.Timer(0.2, gate.set).start()
        started = time.monotonic()
        done = updates.submit(*stream[3][:1], [stream[3][1]])  # a fourth must wait for the first to finish
        assert time.monotonic() - started >= 0.15 and len(done) >= 1 and done[0][1].updates == 1
    assert learner.counters.updates == 4


def test_unknown_concept_fails_in_the_callers_frame_without_queueing():
    learner = Learner(HEAD, anchor_set(D), CONFIG)
    with UpdateThread(learner) as updates:
        with pytest.raises(BadInputError, match="coffee mug"):
            updates.submit(np.ones((1, F), np.float32), ["coffee mugg"])
        assert updates.wait() == []
    assert learner.counters.frames_seen == 0


def test_an_error_inside_an_update_is_raised_once_nothing_is_left_running():
    learner = Learner(HEAD, anchor_set(D), CONFIG)
    with UpdateThread(learner, depth=8) as updates:
        stream = _stream(5)
        with pytest.raises(BadInputError, match="do not match"):  # from a later submit, or at the latest from wait
            updates.submit(*stream[0][:1], [stream[0][1]])
            updates.submit(np.ones((1, F + 3), np.float32), ["cat"])
            for features, concept in stream[1:]:
                updates.submit(features, [concept])
            updates.wait()
        assert updates.wait() == []  # the queue is empty: the caller may checkpoint
        frames = learner.counters.frames_seen
        time.sleep(0.05)
        assert learner.counters.frames_seen == frames  # no update runs behind the caller's back
    assert 1 <= learner.counters.updates <= 5


def test_queue_depth_must_be_positive():
    with pytest.raises(ValueError, match="depth must be >= 1"):
        UpdateThread(Learner(HEAD, anchor_set(D), CONFIG), depth=0)


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
