"""The closed-form head ("lda"): its statistics, its decision (an explicit LDA), the blend, state round-trip."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from synthetic_data import Clusters, anchor_set, head_params

from edgecvm.learning.analytic_head import AnalyticHead, ClassStatistics
from edgecvm.learning.head_methods import make_head_method
from edgecvm.learning.spd_solve import solve_factored

F, D = 32, 16


def _stream(n_classes: int, per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, Clusters]:
    clusters = Clusters(n_classes, F, seed=seed)
    labels = np.random.default_rng(seed).permutation(np.repeat(np.arange(n_classes), per_class))
    return clusters.draw(labels), labels, clusters


def test_streaming_statistics_equal_the_batch_means_and_within_class_scatter():
    x, y, _ = _stream(4, 30)
    x = x.astype(np.float64)
    stats = ClassStatistics(F, np.float64)
    for start in range(0, y.size, 7):  # chunking must not matter
        stats.add(x[start : start + 7], y[start : start + 7])
    means = np.stack([x[y == c].mean(axis=0) for c in range(4)])
    centred = x - means[y]
    np.testing.assert_allclose(stats.sums / stats.counts[:, None], means, rtol=1e-10)
    np.testing.assert_allclose(stats.within_scatter(), centred.T @ centred, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(stats.counts, [30] * 4)


def test_the_covariance_is_factorised_beside_the_statistics_without_changing_them():
    """The scatter lives in one triangle of the array whose other triangle each solve builds and factorises."""
    x, y, _ = _stream(4, 50)  # 196 scatter updates: three flushes of the buffer and some rows still buffered
    stats = ClassStatistics(F, np.float64)
    stats.add(x, y)
    before = stats.within_scatter()
    factor, shrinkage = stats.covariance_factor(0.3)
    n = y.size
    expected = 0.7 * before / n + 0.3 * np.trace(before / n) / F * np.eye(F)
    assert factor is not None and shrinkage == 0.3
    np.testing.assert_allclose(np.tril(factor.lower), np.linalg.cholesky(expected), rtol=1e-9, atol=1e-12)
    assert stats.covariance_factor(None)[0] is not None  # Ledoit-Wolf, a second factorisation over the first
    np.testing.assert_array_equal(stats.within_scatter(), before)
    clone = ClassStatistics(F, np.float64)
    clone.load_state_arrays({k: v.copy() for k, v in stats.state_arrays().items()})
    np.testing.assert_array_equal(clone.within_scatter(), before)


@pytest.mark.parametrize("shrinkage", [None, 0.05])
def test_early_solves_use_the_buffered_rows_and_agree_with_the_factor(shrinkage: float | None):
    """Until the first flush the scatter is only its buffered rows: ``solver`` goes through them (Woodbury),
    the square array is not even written, and the answer is the factor's."""
    f = 256  # F/2 = 128 rows are buffered before the first flush
    clusters = Clusters(6, f, seed=1)
    labels = np.random.default_rng(1).integers(0, 6, size=200)
    x = clusters.draw(labels).astype(np.float64)
    stats = ClassStatistics(f, np.float64)
    stats.add(x[:100], labels[:100])
    assert stats.low_rank and 64 < stats.state_arrays()["pending"].shape[0] < 128
    assert stats.state_arrays()["scatter"].shape == (0, f)  # a checkpoint holds the rows, not an F x F array of zeros
    rhs = np.random.default_rng(2).standard_normal((f, 9))
    solve, used = stats.solver(shrinkage)
    solved = solve(rhs)
    assert not stats._square.any()  # the statistics' square array was never touched
    factor, used_by_factor = stats.covariance_factor(shrinkage)
    assert used == pytest.approx(used_by_factor, rel=1e-9) and (shrinkage is None or used == shrinkage)
    np.testing.assert_allclose(solved, solve_factored(factor, rhs), rtol=1e-8, atol=1e-8 * np.abs(solved).max())

    clone = ClassStatistics(f, np.float64)  # a state saved in the low-rank phase resumes in it
    clone.load_state_arrays({k: v.copy() for k, v in stats.state_arrays().items()})
    assert clone.low_rank
    np.testing.assert_array_equal(clone.solver(shrinkage)[0](rhs), solved)

    stats.add(x[100:], labels[100:])  # past 128 rows: flushed into the square array, 64-row buffer from then on
    assert not stats.low_rank and stats.state_arrays()["pending"].shape[0] < 64
    assert stats.state_arrays()["scatter"].shape == (f, f)
    centred = x - np.stack([x[labels == c].mean(axis=0) for c in range(6)])[labels]
    np.testing.assert_allclose(stats.within_scatter(), centred.T @ centred, rtol=1e-9, atol=1e-9)
    n = labels.size
    solve, used = stats.solver(0.05)
    solved = solve(rhs)
    np.testing.assert_allclose(solve(rhs[:, :4]), solved[:, :4], rtol=1e-9, atol=1e-12 * np.abs(solved).max())  # block after block
    expected = 0.95 * centred.T @ centred / n + 0.05 * np.trace(centred.T @ centred / n) / f * np.eye(f)
    np.testing.assert_allclose(solved, np.linalg.solve(expected, rhs), rtol=1e-7, atol=1e-7 * np.abs(solved).max())


def test_float32_statistics_match_float64():
    x, y, _ = _stream(4, 50)
    s32, s64 = ClassStatistics(F, np.float32), ClassStatistics(F, np.float64)
    s32.add(x, y)
    s64.add(x.astype(np.float64), y)
    assert s32.within_scatter().dtype == np.float32
    np.testing.assert_allclose(s32.within_scatter(), s64.within_scatter(), rtol=1e-4, atol=1e-3)


def test_without_conse_the_nearest_known_anchor_is_the_explicit_lda_decision():
    x, y, clusters = _stream(5, 40)
    anchors = anchor_set(D).vectors[:5]
    head = AnalyticHead("lda-noconse", head_params(feature_dim=F, concept_dim=D), use_conse=False, shrinkage=0.1,
                        dtype=np.float64)
    head.update(x, y, anchors, None)
    test = clusters.draw(np.repeat(np.arange(5), 20))
    predicted = np.argmax(head.embed(test) @ anchors.T, axis=1)
    # the textbook LDA with the same shrunk pooled covariance
    means = np.stack([x[y == c].mean(axis=0) for c in range(5)]).astype(np.float64)
    centred = x - means[y]
    cov = centred.T @ centred / y.size
    cov = 0.9 * cov + 0.1 * np.trace(cov) / F * np.eye(F)
    w = np.linalg.solve(cov, means.T)
    expected = np.argmax(test @ w - 0.5 * np.einsum("fk,kf->k", w, means), axis=1)
    np.testing.assert_array_equal(predicted, expected)
    assert np.mean(predicted == np.repeat(np.arange(5), 20)) > 0.8


def test_conse_blend_keeps_zero_shot_answers_for_concepts_not_taught():
    head = head_params(feature_dim=F, concept_dim=D, conse=True)
    method = make_head_method("lda", head)
    x, y, _ = _stream(3, 30)
    anchors = anchor_set(D).vectors[:3]
    before = method.embed(x)
    method.update(x, y, anchors, None)
    after = method.embed(x)
    assert np.allclose(np.linalg.norm(after, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(before, after)
    assert method.as_head_params().conse is not None and method.as_head_params().conse.weight != 0.0


def test_the_exported_projection_answers_until_the_first_solve_and_is_then_let_go():
    head = head_params(feature_dim=F, concept_dim=D, conse=True)
    method = make_head_method("lda", head)
    x, y, _ = _stream(3, 30)
    np.testing.assert_array_equal(method.as_head_params().params["w"], head.params["w"])  # zero-shot: the export's
    method.update(x, y, anchor_set(D).vectors[:3], None)
    assert method.as_head_params().params["w"].shape == (F, D)  # the solved head
    assert not any(p is head.params["w"] for p in method.base.params.values())
    without = method.nbytes()
    method.base = dataclasses.replace(method.base, params=head.params)
    assert method.nbytes() - without == head.params["w"].nbytes + head.params["b"].nbytes  # what the plan counted
    assert method.base.conse is head.conse and head.params["w"].shape == (F, D)  # the bundle's head is untouched


def test_state_round_trip_reproduces_the_embedding_and_bad_state_is_refused():
    head = head_params(feature_dim=F, concept_dim=D, conse=True)
    x, y, clusters = _stream(4, 60)
    anchors = anchor_set(D).vectors[:4]
    first = make_head_method("lda", head)
    for start in range(0, y.size, 1):
        first.update(x[start : start + 1], y[start : start + 1], anchors[: int(y[: start + 1].max()) + 1], None)
    arrays = {k: np.array(v) for k, v in first.state_arrays().items()}
    assert arrays["stats.scatter"].dtype == np.float32
    second = make_head_method("lda", head)
    second.load_state_arrays(arrays)
    test = clusters.draw(np.arange(4))
    np.testing.assert_allclose(second.embed(test), first.embed(test), atol=1e-5)
    broken = dict(arrays)
    broken["stats.scatter"] = np.full((F, F), np.nan, np.float32)
    with pytest.raises(ValueError):
        make_head_method("lda", head).load_state_arrays(broken)
    with pytest.raises(ValueError):
        make_head_method("lda", head).load_state_arrays({k: v for k, v in arrays.items() if k != "anchors"})


def test_float32_statistics_hold_half_the_memory_of_float64():
    head = head_params(feature_dim=F, concept_dim=D, conse=True)
    f32, f64 = make_head_method("lda", head), AnalyticHead("lda", head, dtype=np.float64)
    assert f32.stats.state_arrays()["scatter"].nbytes * 2 == f64.stats.state_arrays()["scatter"].nbytes  # type: ignore[attr-defined]
    assert f32.nbytes() < f64.nbytes()


def test_one_example_per_class_is_nearest_class_mean_not_a_singular_solve():
    anchors = anchor_set(D).vectors[:3]
    method = make_head_method("lda", head_params(feature_dim=F, concept_dim=D, conse=True))
    x = np.eye(3, F, dtype=np.float32) * 5.0
    method.update(x, np.arange(3), anchors, None)  # the scatter is all zeros: shrinkage 1 towards trace 0
    assert np.isfinite(method.embed(x)).all()
    noconse = AnalyticHead("lda-noconse", head_params(feature_dim=F, concept_dim=D), use_conse=False)
    noconse.update(x, np.arange(3), anchors, None)
    np.testing.assert_array_equal(np.argmax(noconse.embed(x + 0.1) @ anchors.T, axis=1), [0, 1, 2])


def test_huge_or_nonfinite_features_skip_the_update_and_leave_the_state_unchanged():
    method = make_head_method("lda", head_params(feature_dim=F, concept_dim=D, conse=True))
    x, y, _ = _stream(3, 10)
    anchors = anchor_set(D).vectors[:3]
    method.update(x, y, anchors, None)
    before = {k: np.array(v) for k, v in method.state_arrays().items()}
    for bad in (np.float32(1e38), np.nan, np.inf):
        corrupt = x[:1].copy()
        corrupt[0, 3] = bad
        assert np.isnan(method.update(corrupt, y[:1], anchors, None))
    for key, value in method.state_arrays().items():
        np.testing.assert_array_equal(value, before[key])
