"""Class statistics of several devices merged exactly, as if one device had seen every frame.

Why: the ``lda`` head learns only from per-concept counts and sums and the
pooled within-class scatter, and those add up. For one concept seen by two
devices with counts n_a, n_b, means m_a, m_b (Chan, Golub & LeVeque 1979,
the parallel form of Welford's update):

    n = n_a + n_b      sum = sum_a + sum_b
    S = S_a + S_b + (n_a n_b / n) (m_a - m_b)(m_a - m_b)'

and the pooled scatter is the sum of those over concepts, so a merge adds
the scatters and one rank-one correction per concept both sides have seen.
Counts, sums and scatter of the merge are those of one learner that saw
every sample, up to rounding. The Ledoit-Wolf fourth-moment sum (a sum of
``|r|^4`` over the rank-one increments ``r r'`` that built the scatter,
analytic_head.py) depends on the order of the samples even on one device: a
merge adds the corrections to it as increments like any other, and a
concept learned on one device only contributes exactly what it would there.

Statistics are merged by concept *name* (each device numbers its concepts
in the order it was taught them), in float64, and whatever comes from
another device is checked before it is merged (``check``): a merge must
never turn one bad peer into a bad fleet.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgecvm.errors import BadInputError
from edgecvm.learning.analytic_head import MAX_FEATURE, ClassStatistics

_SYMMETRY_TOLERANCE = 1e-5  # |S - S'| relative to max |S|: float32 rounding is ~1e-7, a forged matrix is O(1)


@dataclass(frozen=True)
class NamedStatistics:
    """Class statistics keyed by concept name: what a device shares and what a merge returns."""

    concepts: tuple[str, ...]  # distinct names; row i of counts and sums
    counts: np.ndarray  # (K,) int64, > 0
    sums: np.ndarray  # (K, F) float64
    scatter: np.ndarray  # (F, F) float64, symmetric: the pooled within-class scatter
    fourth: float  # Ledoit-Wolf's running sum of |r|^4 (module docstring)

    @classmethod
    def empty(cls, feature_dim: int) -> NamedStatistics:
        return cls((), np.zeros(0, np.int64), np.zeros((0, feature_dim)), np.zeros((feature_dim, feature_dim)), 0.0)

    @property
    def feature_dim(self) -> int:
        return self.scatter.shape[0]

    @property
    def n(self) -> int:
        return int(self.counts.sum())


def from_class_statistics(stats: ClassStatistics, concepts: tuple[str, ...] | list[str]) -> NamedStatistics:
    """``stats`` (rows in the order of ``concepts``, the learner's known list) keyed by name; concepts without
    samples are left out."""
    rows = np.flatnonzero(stats.counts > 0)
    return NamedStatistics(tuple(concepts[i] for i in rows), stats.counts[rows].copy(),
                           stats.sums[rows].astype(np.float64), stats.within_scatter().astype(np.float64),
                           float(stats.fourth))


def to_class_statistics(named: NamedStatistics, concepts: list[str], dtype: np.dtype) -> ClassStatistics:
    """``named`` as the statistics of a learner whose known concepts are ``concepts`` (each of ``named``'s among
    them), in ``dtype``."""
    index = {c: i for i, c in enumerate(concepts)}
    rows = np.array([index[c] for c in named.concepts], dtype=np.int64)
    size = int(rows.max()) + 1 if rows.size else 0
    counts, sums = np.zeros(size, np.int64), np.zeros((size, named.feature_dim))
    counts[rows], sums[rows] = named.counts, named.sums
    stats = ClassStatistics(named.feature_dim, dtype)
    stats.load_state_arrays({"sums": sums, "counts": counts, "scatter": named.scatter,
                             "fourth": np.array([named.fourth])})
    return stats


def merge(a: NamedStatistics, b: NamedStatistics) -> NamedStatistics:
    """The statistics of every sample behind ``a`` and ``b`` (module docstring); ``a``'s concepts first."""
    index = {c: i for i, c in enumerate(a.concepts)}
    concepts = a.concepts + tuple(c for c in b.concepts if c not in index)
    index = {c: i for i, c in enumerate(concepts)}
    rows_b = np.array([index[c] for c in b.concepts], dtype=np.int64)
    counts = np.zeros(len(concepts), np.int64)
    sums = np.zeros((len(concepts), a.feature_dim))
    counts[: a.counts.size], sums[: a.counts.size] = a.counts, a.sums
    shared = rows_b < a.counts.size  # concepts both have seen: the between-device correction
    n_a, n_b = a.counts[rows_b[shared]], b.counts[shared]
    gap = a.sums[rows_b[shared]] / n_a[:, None] - b.sums[shared] / n_b[:, None]
    corrections = np.sqrt(n_a * n_b / (n_a + n_b))[:, None] * gap  # one rank-one increment per shared concept
    counts[rows_b] += b.counts
    sums[rows_b] += b.sums
    scatter = a.scatter + b.scatter + corrections.T @ corrections
    fourth = a.fourth + b.fourth + float(np.sum(np.einsum("kf,kf->k", corrections, corrections) ** 2))
    return NamedStatistics(concepts, counts, sums, scatter, fourth)


def check(named: NamedStatistics, source: str, feature_dim: int) -> None:
    """Refuse statistics no device could have learned, with a ``BadInputError`` naming ``source``.

    Shapes, distinct names, whole positive counts, finite values, a symmetric
    scatter with a non-negative diagonal and off-diagonal values a covariance
    can have (|S_ij| <= sqrt(S_ii S_jj)), and means and spreads below the
    learner's own limit on a feature value.
    """
    k = len(named.concepts)

    def refuse(why: str) -> BadInputError:
        return BadInputError(f"{source}: refused its class statistics: {why}")

    if len(set(named.concepts)) != k or not all(isinstance(c, str) and c for c in named.concepts):
        raise refuse("the concept names are not distinct non-empty names")
    if (named.counts.shape != (k,) or named.sums.shape != (k, feature_dim)
            or named.scatter.shape != (feature_dim, feature_dim)):
        raise refuse(f"shapes {named.counts.shape}, {named.sums.shape}, {named.scatter.shape} for {k} concepts "
                     f"of {feature_dim} features (made with another bundle?)")
    if named.counts.dtype.kind not in "iu" or (named.counts <= 0).any():
        raise refuse("the sample counts are not whole numbers >= 1")
    if not (np.isfinite(named.sums).all() and np.isfinite(named.scatter).all() and np.isfinite(named.fourth)):
        raise refuse("it holds NaN or Inf")
    scatter = named.scatter
    largest = float(np.abs(scatter).max(initial=0.0))
    if float(np.abs(scatter - scatter.T).max(initial=0.0)) > _SYMMETRY_TOLERANCE * largest:
        raise refuse("the scatter matrix is not symmetric")
    diag = scatter.diagonal()
    spread = np.sqrt(np.maximum(diag, 0.0))
    if (diag < -_SYMMETRY_TOLERANCE * largest).any() or named.fourth < 0 or (
            np.abs(scatter) > np.outer(spread, spread) * (1 + _SYMMETRY_TOLERANCE) + _SYMMETRY_TOLERANCE * largest
    ).any():
        raise refuse("the scatter matrix is not a covariance (negative variance or |S_ij| > sqrt(S_ii S_jj))")
    means = named.sums / np.maximum(named.counts, 1)[:, None]
    if float(np.abs(means).max(initial=0.0)) >= MAX_FEATURE or float(spread.max(initial=0.0)) >= MAX_FEATURE * np.sqrt(
            max(named.n, 1)):
        raise refuse(f"its values are absurdly large (a mean or spread beyond {MAX_FEATURE:g})")
