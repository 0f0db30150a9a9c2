"""State dir: exact round trip, fallback to .prev on corruption, disk-full survival, identity checks."""

from __future__ import annotations

import errno
import logging

import numpy as np
import pytest
from synthetic_data import CONCEPTS, Clusters, anchor_set, head_params

from edgecvm.device.state import (
    STATE_FILE,
    Checkpointer,
    StateIdentity,
    has_state,
    load_state,
    save_state,
)
from edgecvm.errors import BadInputError, IntegrityError
from edgecvm.formats import integrity
from edgecvm.learning.head_methods import DEFAULT_METHOD
from edgecvm.learning.learner import Learner, LearnerConfig

F, D = 32, 16
IDENTITY = StateIdentity(bundle_sha256="b" * 64, anchors_sha256="a" * 64)
CONFIG = LearnerConfig(replay_bytes=100 * F * 2, batch_size=8)
HEAD = head_params("mlp", F, D, conse=True)
ANCHORS = anchor_set(D)
PROBE = Clusters(6, F, seed=9).draw(np.arange(6).repeat(3))


def _teach(learner: Learner, n: int, seed: int = 0) -> None:
    clusters = Clusters(6, F, seed=0)
    labels = np.random.default_rng(seed).integers(0, 6, size=n)
    for label, row in zip(labels, clusters.draw(labels), strict=True):
        learner.observe_features(row[None], [CONCEPTS[label]])


def _answers(learner: Learner) -> list[tuple[str, float]]:
    return [(p.concept, p.score) for p in learner.predict_features(PROBE)]


def _load(state_dir, **kw) -> Learner:
    return load_state(state_dir, HEAD, ANCHORS, kw.pop("identity", IDENTITY), kw.pop("config", CONFIG), **kw)


def test_round_trip_gives_identical_predictions_and_continues_the_same_run(tmp_path):
    learner = Learner(HEAD, ANCHORS, CONFIG)
    _teach(learner, 40)
    save_state(tmp_path, learner, IDENTITY)
    resumed = _load(tmp_path)
    assert _answers(resumed) == _answers(learner)
    assert resumed.known == learner.known and resumed.counters == learner.counters
    assert resumed.method.name == DEFAULT_METHOD
    np.testing.assert_array_equal(resumed.replay.features[: resumed.replay.size],
                                  learner.replay.features[: learner.replay.size])
    # optimizer moments and both random generators are restored: more teaching matches bit for bit
    _teach(learner, 20, seed=1)
    _teach(resumed, 20, seed=1)
    for key, value in learner.method.state_arrays().items():
        np.testing.assert_array_equal(resumed.method.state_arrays()[key], value)


def test_resume_uses_the_current_profile_replay_size(tmp_path):
    learner = Learner(HEAD, ANCHORS, CONFIG)
    _teach(learner, 60)
    save_state(tmp_path, learner, IDENTITY)
    smaller = _load(tmp_path, config=LearnerConfig(replay_bytes=30 * F * 2, batch_size=8))
    assert smaller.replay.capacity == 30 and smaller.replay.size == 30


def test_a_state_taught_with_a_larger_replay_buffer_resumes_on_a_smaller_device(tmp_path):
    """A workstation's profile pools more replayed samples for calibration than a Pi Zero's: the newest that fit are
    kept, nothing is refused, and teaching goes on."""
    learner = Learner(HEAD, ANCHORS, LearnerConfig(replay_bytes=2000 * F * 2, batch_size=8))
    _teach(learner, 80)
    assert learner.method.pool.size > 256  # more than the smaller device's pool holds
    save_state(tmp_path, learner, IDENTITY)
    smaller = _load(tmp_path, config=LearnerConfig(replay_bytes=300 * F * 2, batch_size=8))
    assert smaller.method.pool.size == smaller.method.pool.capacity == 256 and smaller.known == learner.known
    np.testing.assert_array_equal(smaller.method.pool.features[smaller.method.pool.usable_rows(np.full(6, 9))],
                                  learner.method.pool.features[learner.method.pool.usable_rows(np.full(6, 9))][-256:])
    assert [concept for concept, _ in _answers(smaller)] == [concept for concept, _ in _answers(learner)]
    _teach(smaller, 20, seed=1)
    assert smaller.counters.updates == 100


def _two_checkpoints(state_dir) -> tuple[list, list]:
    learner = Learner(HEAD, ANCHORS, CONFIG)
    _teach(learner, 20)
    save_state(state_dir, learner, IDENTITY)
    first = _answers(learner)
    _teach(learner, 20, seed=1)
    save_state(state_dir, learner, IDENTITY)
    return first, _answers(learner)


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _bitflip(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_truncate, _bitflip], ids=["truncated", "bit-flipped"])
def test_corrupt_latest_falls_back_to_previous_with_a_warning(tmp_path, caplog, damage):
    first, _ = _two_checkpoints(tmp_path)
    damage(tmp_path / STATE_FILE)
    with caplog.at_level(logging.WARNING, logger="edgecvm.state"):
        resumed = _load(tmp_path)
    assert _answers(resumed) == first and resumed.counters.updates == 20
    assert str(tmp_path / STATE_FILE) in caplog.text and "previous checkpoint" in caplog.text


def test_missing_latest_falls_back_to_previous(tmp_path, caplog):
    first, _ = _two_checkpoints(tmp_path)
    (tmp_path / STATE_FILE).unlink()
    with caplog.at_level(logging.WARNING, logger="edgecvm.state"):
        assert _answers(_load(tmp_path)) == first
    assert "previous checkpoint" in caplog.text


def test_both_corrupt_is_an_integrity_error_naming_both_files(tmp_path):
    _two_checkpoints(tmp_path)
    _truncate(tmp_path / STATE_FILE)
    _bitflip(tmp_path / (STATE_FILE + ".prev"))
    with pytest.raises(IntegrityError) as info:
        _load(tmp_path)
    message = str(info.value)
    assert str(tmp_path / STATE_FILE) in message and str(tmp_path / (STATE_FILE + ".prev")) in message
    assert "\n" not in message


def test_corrupt_only_checkpoint_is_an_integrity_error(tmp_path):
    save_state(tmp_path, Learner(HEAD, ANCHORS, CONFIG), IDENTITY)
    _bitflip(tmp_path / STATE_FILE)
    with pytest.raises(IntegrityError, match=STATE_FILE):
        _load(tmp_path)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS], ids=["disk-full", "read-only"])
def test_failed_checkpoint_warns_keeps_learning_and_leaves_the_old_file_intact(tmp_path, monkeypatch, caplog, code):
    learner = Learner(HEAD, ANCHORS, CONFIG)
    checkpointer = Checkpointer(tmp_path, learner, IDENTITY, every=10)
    _teach(learner, 10)
    assert checkpointer.maybe_checkpoint() and checkpointer.last_saved_update == 10
    on_disk = (tmp_path / STATE_FILE).read_bytes()

    def refuse(*args, **kwargs):
        raise OSError(code, "simulated")

    monkeypatch.setattr(integrity.os, "replace", refuse)
    _teach(learner, 10, seed=1)
    with caplog.at_level(logging.WARNING, logger="edgecvm.state"):
        assert checkpointer.maybe_checkpoint() is False
    assert "CHECKPOINT FAILED" in caplog.text and str(tmp_path / STATE_FILE) in caplog.text
    assert checkpointer.failed == 1 and checkpointer.last_saved_update == 10
    assert (tmp_path / STATE_FILE).read_bytes() == on_disk
    assert not list(tmp_path.glob(f".{STATE_FILE}.*.tmp"))  # no half-written temp file left behind

    _teach(learner, 10, seed=2)  # learning goes on in memory
    assert learner.counters.updates == 30
    monkeypatch.undo()
    assert checkpointer.checkpoint() and checkpointer.last_saved_update == 30
    assert _answers(_load(tmp_path)) == _answers(learner)


def test_checkpointer_writes_every_n_updates(tmp_path):
    learner = Learner(HEAD, ANCHORS, CONFIG)
    checkpointer = Checkpointer(tmp_path, learner, IDENTITY, every=5)
    for i in range(12):
        _teach(learner, 1, seed=i)
        checkpointer.maybe_checkpoint()
    assert checkpointer.written == 2 and checkpointer.last_saved_update == 10
    assert _load(tmp_path).counters.updates == 10
    with pytest.raises(BadInputError, match="checkpoint interval"):
        Checkpointer(tmp_path, learner, IDENTITY, every=0)


@pytest.mark.parametrize("field", ["bundle_sha256", "anchors_sha256"])
def test_state_from_another_bundle_or_anchor_file_is_refused(tmp_path, field):
    save_state(tmp_path, Learner(HEAD, ANCHORS, CONFIG), IDENTITY)
    other = StateIdentity(**{**IDENTITY.__dict__, field: "c" * 64})
    what = "bundle" if field == "bundle_sha256" else "anchor file"
    with pytest.raises(BadInputError, match=f"different {what}"):
        _load(tmp_path, identity=other)


def test_state_learned_with_another_head_method_is_refused(tmp_path):
    save_state(tmp_path, Learner(HEAD, ANCHORS, CONFIG), IDENTITY)
    with pytest.raises(BadInputError, match=f"head method '{DEFAULT_METHOD}'"):
        _load(tmp_path, config=LearnerConfig(method="sgd"))


def test_state_of_a_head_method_the_product_does_not_offer_is_refused_by_name(tmp_path):
    learner = Learner(HEAD, ANCHORS, CONFIG)
    learner.method.name = "lda-float64"  # the name of an eval-only research variant
    save_state(tmp_path, learner, IDENTITY)
    with pytest.raises(BadInputError, match="head method 'lda-float64', which this edgecvm does not offer .lda, sgd."):
        _load(tmp_path)


@pytest.mark.parametrize(("method", "other_head"), [
    ("sgd", head_params("linear", F, D)),  # the gradient head's parameters have another shape
    ("lda", head_params("mlp", F + 1, D, conse=True)),  # the statistics are per feature: another backbone width
])
def test_state_of_another_head_shape_is_an_integrity_error(tmp_path, method, other_head):
    config = LearnerConfig(method=method, replay_bytes=CONFIG.replay_bytes, batch_size=CONFIG.batch_size)
    learner = Learner(HEAD, ANCHORS, config)
    _teach(learner, 10)
    save_state(tmp_path, learner, IDENTITY)
    with pytest.raises(IntegrityError, match="inconsistent state"):
        load_state(tmp_path, other_head, ANCHORS, IDENTITY, config)


def test_an_empty_dir_is_refused_unless_a_fresh_start_is_asked_for(tmp_path):
    assert not has_state(tmp_path)
    fresh = _load(tmp_path / "new", fresh_if_empty=True)
    assert fresh.counters.updates == 0 and fresh.known == []
    with pytest.raises(BadInputError, match="no learner state"):
        _load(tmp_path)
