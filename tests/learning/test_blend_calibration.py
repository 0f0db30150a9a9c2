"""Blend calibration: leave-one-out scores equal a brute-force refit, the fit finds a known blend, the pool persists."""

from __future__ import annotations

import numpy as np
import pytest

from edgecvm.learning import blend_calibration
from edgecvm.learning.blend_calibration import CalibrationPool, distinct_rows, fit_blend, leave_one_out

F, K, N_PER = 6, 3, 4


def _scatter(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    out = np.zeros((F, F))
    for k in range(K):
        d = x[y == k] - x[y == k].mean(axis=0)
        out += d.T @ d
    return out


def _lda_scores(x: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    return x @ precision @ means.T - 0.5 * np.einsum("kf,fg,kg->k", means, precision, means)


@pytest.mark.parametrize("chunk", [64, 5])  # one chunk, and chunks that split the samples unevenly
def test_leave_one_out_scores_equal_the_discriminant_refitted_without_the_sample(monkeypatch, chunk: int):
    monkeypatch.setattr(blend_calibration, "CHUNK", chunk)
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(K * N_PER, F)), np.repeat(np.arange(K), N_PER)
    n, shrinkage, trace_mean = len(x), 0.3, 1.7  # shrinkage and its target held fixed, as the head does

    def precision(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        return np.linalg.inv((1 - shrinkage) * _scatter(xs, ys) / n + shrinkage * trace_mean * np.eye(F))

    p = precision(x, y)
    means = np.stack([x[y == k].mean(axis=0) for k in range(K)])
    weights, offsets = p @ means.T, 0.5 * np.einsum("fk,kf->k", p @ means.T, means)
    fast = leave_one_out(x, y, weights, offsets, p @ x.T, means, np.full(K, N_PER), (1 - shrinkage) / n)
    for i in range(n):
        keep = np.arange(n) != i
        means_i = np.stack([x[keep][y[keep] == k].mean(axis=0) for k in range(K)])
        np.testing.assert_allclose(fast[i], _lda_scores(x[i], means_i, precision(x[keep], y[keep])), rtol=1e-9)
    # and it is a real correction: in-sample scores favour the sample's own class more
    in_sample = x @ weights - offsets
    own = np.arange(n), y
    assert (in_sample[own] > fast[own]).all()


def test_duplicate_samples_are_solved_once_and_scored_as_if_repeated():
    """The pool repeats replayed samples; S^-1 of each distinct one, mapped back by column, scores them all."""
    rng = np.random.default_rng(2)
    base = rng.normal(size=(K * N_PER, F))
    y_base = np.repeat(np.arange(K), N_PER)
    picks = rng.integers(0, len(base), size=30)
    x, y = base[picks], y_base[picks]
    distinct, column = distinct_rows(x)
    np.testing.assert_array_equal(distinct[column], x)
    assert len(distinct) == len(np.unique(picks)) < len(x)
    np.testing.assert_array_equal(distinct, base[list(dict.fromkeys(picks))])  # first occurrences, in order
    some = np.array([3, 7, 7, 12, 3, 20])  # the distinct rows of a selection, read from the array in place
    chosen, chosen_column = distinct_rows(x, some)
    np.testing.assert_array_equal(chosen[chosen_column], x[some])
    assert len(chosen) == len({x[i].tobytes() for i in some})
    p = np.linalg.inv(0.7 * _scatter(base, y_base) / len(base) + 0.3 * np.eye(F))
    means = np.stack([base[y_base == k].mean(axis=0) for k in range(K)])
    weights, offsets = p @ means.T, 0.5 * np.einsum("fk,kf->k", p @ means.T, means)
    args = (weights, offsets)
    rest = (means, np.full(K, N_PER), 0.7 / len(base))
    np.testing.assert_allclose(leave_one_out(x, y, *args, p @ distinct.T, *rest, column),
                               leave_one_out(x, y, *args, p @ x.T, *rest), rtol=1e-12)


def test_the_pool_scores_its_float16_rows_as_their_exact_float32_values():
    """The pool hands out its rows as stored (no float32 copy at the solve's peak): same scores as widened ones."""
    rng = np.random.default_rng(3)
    x16, y = rng.normal(size=(K * N_PER, F)).astype(np.float16), np.repeat(np.arange(K), N_PER)
    pool = CalibrationPool(len(y), F)
    pool.add(x16, y)
    index = pool.usable_rows(np.full(K, N_PER))
    rows, labels = pool.features[index], pool.labels[index]
    assert rows.dtype == np.float16
    x32 = rows.astype(np.float32)
    means = np.stack([x32[labels == k].mean(axis=0) for k in range(K)])
    weights = rng.normal(size=(F, K)).astype(np.float32)
    args = (weights, np.zeros(K, np.float32), (weights[:, :1] * x32.T[:1]).astype(np.float32), means, np.full(K, N_PER), 0.01)
    np.testing.assert_array_equal(leave_one_out(rows, labels, *args), leave_one_out(x32, labels, *args))


def test_fit_recovers_the_blend_that_generated_the_labels():
    rng = np.random.default_rng(0)
    scores, prior = rng.normal(size=(4000, 20)), rng.normal(size=(4000, 20))
    logits = 2.0 * scores + 0.5 * prior
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(20, p=row) for row in p])
    scale, gain = fit_blend(scores, prior, labels, start=(1.0, 0.0))
    assert scale == pytest.approx(2.0, abs=0.1) and gain == pytest.approx(0.5, abs=0.05)


def test_fit_keeps_the_discriminant_weight_positive_and_returns_the_start_when_nothing_can_be_fitted():
    rng = np.random.default_rng(0)
    scores, prior = rng.normal(size=(200, 5)), rng.normal(size=(200, 5))
    labels = np.argmin(scores, axis=1)  # the discriminant is exactly backwards
    assert fit_blend(scores, prior, labels, start=(1.0, 0.0))[0] > 0
    assert fit_blend(scores[:0], prior[:0], labels[:0], start=(3.0, 4.0)) == (3.0, 4.0)


def test_pool_keeps_the_newest_rows_and_round_trips():
    pool = CalibrationPool(4, F)
    for i in range(6):
        pool.add(np.full((1, F), i, np.float32), np.array([i % 3]))
    index = pool.usable_rows(np.array([2, 2, 1]))  # class 2 has one example: left out (nothing would be left)
    assert pool.features[index, 0].tolist() == [3.0, 4.0] and pool.labels[index].tolist() == [0, 1]  # oldest first
    assert pool.features[pool.usable_rows(np.array([2, 2, 2])), 0].tolist() == [2.0, 3.0, 4.0, 5.0]
    again = CalibrationPool(4, F)
    again.load_state_arrays(pool.state_arrays())
    pool.add(np.full((1, F), 9, np.float32), np.array([0]))
    again.add(np.full((1, F), 9, np.float32), np.array([0]))
    np.testing.assert_array_equal(again.state_arrays()["features"], pool.state_arrays()["features"])
    broken = {"features": np.full((2, F), np.nan, np.float16), "labels": np.zeros(2, np.int64), "next": np.array([0])}
    with pytest.raises(ValueError, match="NaN"):
        CalibrationPool(4, F).load_state_arrays(broken)
    with pytest.raises(ValueError, match="calibration pool has shapes"):  # a ring position past its rows
        CalibrationPool(4, F).load_state_arrays({**pool.state_arrays(), "next": np.array([5])})


def test_a_full_pool_saved_at_a_smaller_capacity_resumes_oldest_first_and_grows():
    small = CalibrationPool(4, F)
    for i in range(6):  # the ring holds 2, 3, 4, 5 stored as 4, 5, 2, 3
        small.add(np.full((1, F), i, np.float32), np.array([0]))
    pool = CalibrationPool(8, F)
    pool.load_state_arrays(small.state_arrays())
    pool.add(np.full((2, F), 6, np.float32), np.array([0, 0]))
    assert pool.features[pool.usable_rows(np.array([9])), 0].tolist() == [2.0, 3.0, 4.0, 5.0, 6.0, 6.0]


@pytest.mark.parametrize(("saved", "added"), [(6, 2), (10, 1), (3, 2)])
def test_a_pool_saved_at_a_larger_capacity_resumes_with_its_newest_rows(saved: int, added: int):
    """A state taught on a workstation (its profile's larger pool) resumed by a smaller device: no error, the newest
    rows kept, and the ring goes on as if it had always been this size."""
    large = CalibrationPool(8, F)
    for i in range(saved):
        large.add(np.full((1, F), i, np.float32), np.array([0]))
    pool, same = CalibrationPool(4, F), CalibrationPool(4, F)
    pool.load_state_arrays(large.state_arrays())
    for i in range(saved):
        same.add(np.full((1, F), i, np.float32), np.array([0]))
    for i in range(added):
        for ring in (pool, same):
            ring.add(np.full((1, F), 100 + i, np.float32), np.array([0]))
    assert (pool.features[pool.usable_rows(np.array([9])), 0].tolist()
            == same.features[same.usable_rows(np.array([9])), 0].tolist())
