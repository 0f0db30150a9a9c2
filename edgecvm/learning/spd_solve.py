"""Solve ``a x = b`` for a symmetric positive definite ``a``, factorising ``a`` in place, in blocks.

Why not ``np.linalg.solve``: for the analytic head's 1280 x 1280 float32
covariance it copies the matrix and the right-hand sides into LAPACK's
layout and OpenBLAS's LU then works in buffers of its own; measured on this
repository's host (numpy 2.4, scipy-openblas 0.3.31, one BLAS thread): peak
RSS +28 MB for one solve with 456 right-hand sides, 20 MB of it still
resident afterwards, on top of the statistics the learner keeps. That made
the solve the peak of a whole ``learn`` run (133 MB against 92 MB for the
gradient head). A right-looking blocked Cholesky needs no copy of the
matrix: it reads and writes only the lower triangle and the diagonal, so
the analytic head keeps its statistics in the upper triangle of the same
array (analytic_head.ClassStatistics). The updates are matrix products on
column panels of ``block`` columns and the only LAPACK calls are on
``block x block`` diagonal blocks (their Cholesky factors and inverses).
Cholesky also suits the problem: the shrunk covariance is positive definite
by construction, and the factor costs half the flops of LU.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

BLOCK = 64  # columns per panel: measured fastest of 32 / 64 / 128 for F = 1280, temporaries < 1 MB


@dataclass
class CholeskyFactor:
    """L (lower triangle and diagonal of ``lower``; the strict upper triangle is the caller's) and the inverse of
    each diagonal block.

    The block inverses turn every triangular solve into a matrix product:
    numpy has no triangular solve, and an LU solve per block cost more than
    the whole factorisation (measured: 710 small ``np.linalg.solve`` calls,
    0.19 of 0.43 s, in 11 solves of a 200-frame ``learn``).
    """

    lower: np.ndarray
    inverse_blocks: list[np.ndarray]
    block: int


def panels(n: int, block: int = BLOCK) -> Iterator[tuple[int, int]]:
    """``(start, end)`` of each column panel of an n x n matrix."""
    for start in range(0, n, block):
        yield start, min(start + block, n)


def cholesky_in_place(a: np.ndarray, block: int = BLOCK) -> CholeskyFactor:
    """Overwrite the lower triangle and diagonal of ``a`` with L, a = L L', reading only that triangle.

    The strict upper triangle is neither read nor written. Raises
    ``np.linalg.LinAlgError`` when ``a`` is not positive definite.
    """
    n = a.shape[0]
    inverses = []
    for k, e in panels(n, block):
        lower = np.tril_indices(e - k)
        diag = np.linalg.cholesky(np.tril(a[k:e, k:e]))  # LAPACK reads one triangle; tril says which
        a[k:e, k:e][lower] = diag[lower]
        inverses.append(np.linalg.inv(diag))
        if e == n:
            break
        panel = a[e:, k:e] @ inverses[-1].T  # L[e:, k:e] = A[e:, k:e] L_kk^-T
        a[e:, k:e] = panel
        for j, je in panels(n - e, block):  # trailing update, lower triangle only, one column panel at a time
            update = panel[j:] @ panel[j:je].T
            a[e + je:, e + j: e + je] -= update[je - j:]
            inside = np.tril_indices(je - j)
            a[e + j: e + je, e + j: e + je][inside] -= update[: je - j][inside]
    return CholeskyFactor(a, inverses, block)


def solve_factored(factor: CholeskyFactor, b: np.ndarray) -> np.ndarray:
    """x with L L' x = b for the factor from ``cholesky_in_place``; ``b`` is not changed."""
    lower, block = factor.lower, factor.block
    n = lower.shape[0]
    x = np.array(b, dtype=np.result_type(lower, b), order="C")
    blocks = list(enumerate(range(0, n, block)))
    for i, k in blocks:  # forward: L y = b
        e = min(k + block, n)
        if k:
            x[k:e] -= lower[k:e, :k] @ x[:k]
        x[k:e] = factor.inverse_blocks[i] @ x[k:e]
    for i, k in reversed(blocks):  # backward: L' x = y
        e = min(k + block, n)
        if e < n:
            x[k:e] -= lower[e:, k:e].T @ x[e:]
        x[k:e] = factor.inverse_blocks[i].T @ x[k:e]
    return x


def low_rank_solver(rows: np.ndarray, gram: np.ndarray, alpha: float, gamma: float) -> Callable[[np.ndarray], np.ndarray]:
    """A function giving x with ``(alpha I + gamma rows' rows) x = b`` for ``alpha > 0``, through the r x r
    ``gram`` = rows rows'; raises ``LinAlgError`` here when that r x r system is numerically singular.

    Why: while a covariance has been built from r < F rows, Woodbury's
    identity turns the F x F system into an r x r one,

        x = (b - rows' (gram + alpha/gamma I)^-1 rows b) / alpha,

    r^2 F + r F m flops for m right-hand sides instead of F^3 / 3 + F^2 m:
    measured 21 + 9 ms for the factor and solve of the analytic head's
    1280 x 1280 covariance, against a few ms here for r up to ~200. The
    small system is solved in float64 (``gram`` is float64), so a tiny
    ``alpha / gamma`` costs accuracy only in the last step. The returned
    function can be called for several blocks of right-hand sides, and does not change ``b``.
    """
    def scaled(b: np.ndarray) -> np.ndarray:
        x = np.array(b, dtype=np.result_type(rows, b), order="C")
        x /= alpha
        return x

    if gamma == 0.0 or rows.shape[0] == 0:
        return scaled
    system = gram + (alpha / gamma) * np.eye(gram.shape[0])
    np.linalg.cholesky(system)  # positive definite by construction: failing, it is numerically singular

    def solve(b: np.ndarray) -> np.ndarray:
        x = scaled(b)
        coefficients = np.linalg.solve(system, (rows @ b).astype(np.float64))
        x -= rows.T @ (coefficients / alpha).astype(x.dtype)
        return x

    return solve
