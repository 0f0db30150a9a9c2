"""The in-place blocked Cholesky solve the analytic head uses instead of np.linalg.solve."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic_data import Clusters, head_params

from edgecvm.learning.analytic_head import AnalyticHead
from edgecvm.learning.spd_solve import cholesky_in_place, low_rank_solver, solve_factored


def _spd(n: int, dtype: type[np.floating], seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((2 * n, n))
    return (x.T @ x / (2 * n) + 0.05 * np.eye(n)).astype(dtype)


@pytest.mark.parametrize("n, block", [(150, 64), (64, 64), (10, 64), (130, 16)])  # partial, exact, single block
def test_factor_is_the_cholesky_factor_in_the_lower_triangle(n: int, block: int):
    a = _spd(n, np.float64)
    factor = cholesky_in_place(a.copy(), block).lower
    np.testing.assert_allclose(np.tril(factor), np.linalg.cholesky(a), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-10), (np.float32, 1e-4)])
def test_solution_matches_lapack_and_leaves_the_right_hand_sides_alone(dtype: type[np.floating], rtol: float):
    a = _spd(200, dtype)
    b = np.random.default_rng(1).standard_normal((200, 37)).astype(dtype)
    b_before = b.copy()
    x = solve_factored(cholesky_in_place(a.copy(), block=64), b)
    expected = np.linalg.solve(a.astype(np.float64), b.astype(np.float64))
    assert x.dtype == dtype and x.shape == b.shape
    np.testing.assert_allclose(x, expected, rtol=rtol, atol=rtol * np.abs(expected).max())
    np.testing.assert_array_equal(b, b_before)


def test_only_the_lower_triangle_is_read_or_written():
    """The analytic head keeps its statistics in the strict upper triangle of the array it factorises."""
    a = _spd(150, np.float64)
    mixed = a.copy()
    upper = np.triu_indices(150, 1)
    mixed[upper] = np.arange(upper[0].size)  # not the matrix's: must neither be used nor changed
    factor = cholesky_in_place(mixed, block=64)
    np.testing.assert_allclose(np.tril(factor.lower), np.linalg.cholesky(a), rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(mixed[upper], np.arange(upper[0].size))


def test_a_matrix_that_is_not_positive_definite_is_refused():
    a = _spd(100, np.float64)
    a[70, 70] = -1.0  # indefinite; found in the second block
    with pytest.raises(np.linalg.LinAlgError):
        cholesky_in_place(a, block=64)


def test_head_rescues_a_singular_covariance_by_raising_the_shrinkage():
    """No shrinkage and fewer samples than dimensions: S is singular; the head must still answer, finitely."""
    f, d = 32, 16
    clusters = Clusters(3, f, seed=0)
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    head = AnalyticHead("lda-noconse", head_params(feature_dim=f, concept_dim=d), use_conse=False, shrinkage=0.0)
    anchors = np.eye(d, dtype=np.float32)[:3]
    head.update(clusters.draw(labels), labels, anchors, None)
    assert head.stats.covariance_factor(0.0)[0] is None  # the covariance as first asked for is not positive definite
    embedded = head.embed(clusters.draw(np.arange(3)))
    assert np.isfinite(embedded).all()
    assert (np.argmax(embedded @ anchors.T, axis=1) == np.arange(3)).all()


@pytest.mark.parametrize("r, alpha, gamma", [(12, 0.3, 0.02), (80, 1e-4, 1.0), (0, 0.5, 0.1), (12, 0.7, 0.0)])
def test_low_rank_solve_equals_the_dense_solve(r: int, alpha: float, gamma: float):
    """alpha I + gamma R'R with fewer rows than dimensions (12), more (80), none, and no low-rank part."""
    f = 50
    rows = np.random.default_rng(2).standard_normal((r, f))
    b = np.random.default_rng(3).standard_normal((f, 7))
    b_before = b.copy()
    solve = low_rank_solver(rows, rows @ rows.T, alpha, gamma)
    x = solve(b)
    expected = np.linalg.solve(alpha * np.eye(f) + gamma * rows.T @ rows, b)
    np.testing.assert_allclose(x, expected, rtol=1e-8, atol=1e-10 * np.abs(expected).max())
    np.testing.assert_array_equal(b, b_before)
    np.testing.assert_allclose(solve(b[:, 2:5]), expected[:, 2:5], rtol=1e-8, atol=1e-10 * np.abs(expected).max())
