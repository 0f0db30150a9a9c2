"""Solve ``a x = b`` for a symmetric positive definite ``a``, factorising ``a`` in place, in blocks.

Why not ``np.linalg.solve``: for the analytic head's 1280 x 1280 float32
covariance it copies the matrix and the right-hand sides into LAPACK's
layout and OpenBLAS's LU then works in buffers of its own; measured on this
repository's host (numpy 2.4, scipy-openblas 0.3.31, one BLAS thread): peak
RSS +28 MB for one solve with 456 right-hand sides, 20 MB of it still
resident afterwards, on top of the statistics the learner keeps. That made
the solve the peak of a whole ``learn`` run (130 MB against 92 MB for the
gradient head). A right-looking blocked Cholesky needs no second copy of
the matrix: the covariance the solve is given is already a scratch array,
so its lower triangle becomes the factor; the updates are matrix products on
column panels of ``block`` columns and the only LAPACK calls are on
``block x block`` diagonal blocks. Cholesky also suits the problem: the
shrunk covariance is positive definite by construction, and the factor costs
half the flops of LU.
"""

from __future__ import annotations

import numpy as np

BLOCK = 64  # columns per panel: measured fastest of 64 / 128 / 256 for F = 1280, temporaries < 1 MB


def cholesky_in_place(a: np.ndarray, block: int = BLOCK) -> np.ndarray:
    """Overwrite the lower triangle of ``a`` with L, a = L L' (the upper triangle is left as scratch).

    Raises ``np.linalg.LinAlgError`` when ``a`` is not positive definite.
    """
    n = a.shape[0]
    for k in range(0, n, block):
        e = min(k + block, n)
        diag = np.linalg.cholesky(a[k:e, k:e])
        a[k:e, k:e] = diag
        if e == n:
            break
        panel = np.linalg.solve(diag, a[e:, k:e].T).T  # L[e:, k:e] = A[e:, k:e] L_kk^-T
        a[e:, k:e] = panel
        for j in range(e, n, block):  # trailing update, lower triangle only, one column panel at a time
            je = min(j + block, n)
            a[j:, j:je] -= panel[j - e:] @ panel[j - e: je - e].T
    return a


def solve_factored(factor: np.ndarray, b: np.ndarray, block: int = BLOCK) -> np.ndarray:
    """x with L L' x = b, for L in the lower triangle of ``factor`` (from ``cholesky_in_place``); b is not changed."""
    n = factor.shape[0]
    x = np.array(b, dtype=np.result_type(factor, b), order="C")
    starts = range(0, n, block)
    for k in starts:  # forward: L y = b
        e = min(k + block, n)
        if k:
            x[k:e] -= factor[k:e, :k] @ x[:k]
        x[k:e] = np.linalg.solve(np.tril(factor[k:e, k:e]), x[k:e])
    for k in reversed(starts):  # backward: L' x = y
        e = min(k + block, n)
        if e < n:
            x[k:e] -= factor[e:, k:e].T @ x[e:]
        x[k:e] = np.linalg.solve(np.tril(factor[k:e, k:e]).T, x[k:e])
    return x


def solve_spd_in_place(a: np.ndarray, b: np.ndarray, block: int = BLOCK) -> np.ndarray:
    """``a^-1 b`` for symmetric positive definite ``a``, which is overwritten (see module docstring)."""
    return solve_factored(cholesky_in_place(a, block), b, block)
