"""Latent replay: capacity from bytes, class balance, reservoir fairness, shrink, state round trip."""

from __future__ import annotations

import numpy as np
import pytest

from edgecvm.learning.replay import ReplayBuffer, capacity_for_bytes


def _offer(buffer: ReplayBuffer, labels: list[int] | np.ndarray) -> None:
    """Offer one sample per label; feature value = the sample's position in the stream (exact in float16)."""
    for i, label in enumerate(labels):
        buffer.add(np.full((1, buffer.feature_dim), i, np.float32), np.array([label]))


def test_capacity_comes_from_the_profile_bytes():
    assert capacity_for_bytes(5_120_000, 1280) == 2000  # the host profile: 2,000 features
    buffer = ReplayBuffer.from_bytes(5_120_000, 1280)
    assert buffer.capacity == 2000
    assert buffer.features.dtype == np.float16
    assert buffer.features.nbytes == 5_120_000
    assert ReplayBuffer.from_bytes(0, 1280).capacity == 0


def test_fills_up_then_holds_exactly_capacity():
    buffer = ReplayBuffer(10, 4)
    _offer(buffer, [0] * 6)
    assert buffer.size == 6
    _offer(buffer, [1] * 30)
    assert buffer.size == 10


def test_imbalanced_stream_is_stored_balanced():
    buffer = ReplayBuffer(60, 4, seed=1)
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.array([0] * 1000 + [1] * 50 + [2] * 10))
    _offer(buffer, labels)
    held = np.bincount(buffer.labels[: buffer.size], minlength=3)
    assert held[2] == 10  # the rare class keeps every example
    assert sorted(held[:2]) == [25, 25]  # the rest is shared evenly, not by stream frequency
    np.testing.assert_array_equal(buffer.held, held)
    np.testing.assert_array_equal(buffer.seen, [1000, 50, 10])


def test_new_class_takes_slots_from_the_largest_class():
    buffer = ReplayBuffer(12, 2, seed=0)
    _offer(buffer, [0] * 8 + [1] * 4)  # full: 8 + 4
    _offer(buffer, [2] * 4)
    assert np.bincount(buffer.labels[: buffer.size]).tolist() == [4, 4, 4]


def test_within_a_class_the_kept_samples_are_a_uniform_sample_of_its_history():
    """Reservoir fairness: every sample of the stream is kept with the same probability capacity/n."""
    n, capacity, trials = 200, 20, 400
    kept = np.zeros(n)
    for seed in range(trials):
        buffer = ReplayBuffer(capacity, 1, seed=seed)
        _offer(buffer, [0] * n)
        kept[buffer.features[: buffer.size, 0].astype(int)] += 1
    rate = kept / trials
    assert rate.mean() == pytest.approx(capacity / n)
    # per-sample counts are Binomial(400, 0.1): sd 6 around 40; the first and last quarters must agree
    assert abs(rate[: n // 4].mean() - rate[-n // 4 :].mean()) < 0.02
    chi2 = ((kept - kept.mean()) ** 2 / kept.mean()).sum()
    assert chi2 < n + 4 * np.sqrt(2 * n)  # ~ chi-square with n-1 dof; a recency bias would blow this up


def test_sample_draws_distinct_stored_rows():
    buffer = ReplayBuffer(50, 3)
    _offer(buffer, list(np.arange(40) % 4))
    rng = np.random.default_rng(0)
    batch = buffer.sample(32, rng)
    assert batch.features.shape == (32, 3) and batch.labels.shape == (32,)
    assert len(set(batch.features[:, 0].tolist())) == 32
    np.testing.assert_array_equal(batch.labels, batch.features[:, 0].astype(int) % 4)
    assert buffer.sample(100, rng).features.shape[0] == 40  # never more than stored
    assert ReplayBuffer(5, 3).sample(8, rng) is None


def test_values_beyond_float16_are_clipped_not_infinite():
    buffer = ReplayBuffer(2, 3)
    buffer.add(np.array([[1e6, -1e6, 1.0]], np.float32), np.array([0]))
    assert np.isfinite(buffer.features[0]).all()
    assert buffer.features[0, 0] == np.finfo(np.float16).max


def test_shrink_frees_memory_and_evicts_from_the_largest_classes():
    buffer = ReplayBuffer(100, 8, seed=0)
    _offer(buffer, [0] * 70 + [1] * 20 + [2] * 10)  # room for all: 70, 20, 10
    before = buffer.nbytes
    new_capacity = buffer.shrink(40 * 8 * 2)
    assert new_capacity == buffer.capacity == 40
    assert buffer.nbytes < before
    assert np.bincount(buffer.labels[: buffer.size]).tolist() == [15, 15, 10]
    np.testing.assert_array_equal(buffer.held, [15, 15, 10])
    # what is left is real stored data, not zeros: stream positions of the right classes
    pos = buffer.features[: buffer.size, 0].astype(int)
    np.testing.assert_array_equal(np.where(pos < 70, 0, np.where(pos < 90, 1, 2)), buffer.labels[: buffer.size])
    assert buffer.shrink(10_000_000) == 40  # shrink never grows


def test_state_round_trip_and_rebuild_with_smaller_capacity():
    buffer = ReplayBuffer(30, 4, seed=0)
    _offer(buffer, [0, 1, 2] * 15)
    state = {k: v.copy() for k, v in buffer.state_arrays().items()}
    same = ReplayBuffer.from_state_arrays(state, 30, 4)
    np.testing.assert_array_equal(same.features[: same.size], buffer.features[: buffer.size])
    np.testing.assert_array_equal(same.seen, buffer.seen)
    smaller = ReplayBuffer.from_state_arrays(state, 12, 4)
    assert smaller.capacity == 12 and np.bincount(smaller.labels[: smaller.size]).tolist() == [4, 4, 4]


def test_inconsistent_state_is_refused():
    buffer = ReplayBuffer(10, 4)
    _offer(buffer, [0, 1, 1])
    state = {k: v.copy() for k, v in buffer.state_arrays().items()}
    with pytest.raises(ValueError, match="do not fit"):
        ReplayBuffer.from_state_arrays(state, 10, 5)
    with pytest.raises(ValueError, match="outside"):
        ReplayBuffer.from_state_arrays({**state, "labels": np.array([0, 1, 7])}, 10, 4)
    with pytest.raises(ValueError, match="more samples"):
        ReplayBuffer.from_state_arrays({**state, "seen": np.array([1, 1])}, 10, 4)
