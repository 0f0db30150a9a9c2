"""A projection head solved in closed form from streaming class statistics (head method "lda").

Why: a head trained by gradient steps on a stream forgets what it is not
shown again; statistics that are only ever *added to* do not. This head keeps
running class sums and counts and the pooled within-class scatter of the
features (Welford updates, so the scatter is exactly that of everything seen),
and from them solves a linear projection into concept space whose dot
products with the anchors of the known concepts are linear discriminant
scores:

    s_k(f) = mu_k' S^-1 f - mu_k' S^-1 mu_k / 2          (shared covariance S, shrunk)
    e(f)   = scale * A+ s(f) + conse_gain * conse(f)       A+ = A'(A A' + rho I)^-1, A = known anchors

so ``a_k . e(f) = scale * s_k(f) + conse_gain * a_k . conse(f)`` for every known
concept k: the nearest known anchor is the LDA decision, blended with the frozen
ConSE branch (zero-shot knowledge of the ImageNet classifier). ``e`` is an
ordinary head, ``f @ w + b + conse_gain * conse(f)``, with
``w = scale * S^-1 M' A+'`` and ``b = -scale * A+ c``: the device's predict
path, its ``--vocab all`` answers and its head format do not change. Concepts
not yet taught still get ``a_u . e(f)``: their ConSE evidence plus the
discriminant evidence of the known concepts whose anchors they resemble.
With more than D known concepts A A' is singular and ``A+`` becomes the
ridge least-squares fit (exact up to D = 384 concepts).

Shrinkage of S towards ``trace(S)/F * I`` is the Ledoit-Wolf (2004) estimate
by default, computed from a running sum of ``|d|^4``, so it is large with a
few examples per class and small with many, without tuning.

How much to trust the discriminant against the ConSE prior depends on how
many examples the device has seen: with five per class the prior is worth
more than the noisy means. ``scale`` and ``conse_gain`` are therefore
fitted at every scheduled solve on the last replayed samples, each scored
as if it had been left out of the statistics (blend_calibration.py): the
question the device faces at test time, asked of the head it has now. The
open-set threshold (open_set.py) is set at the same time, on more of them.
Without replay (a profile with no replay budget) they are learned
*prequentially* instead: each new sample is first classified by the last
solved head (test-then-train, before it joins the statistics), and one Adam
step on the two numbers lowers its cross-entropy; measured, that tunes the
blend for heads with fewer examples than the tested one (docs/results.md).
The solve (an F x F linear system, by a blocked Cholesky in place: spd_solve.py)
runs every ``_SOLVE_EVERY`` updates (more often early on) and before predicting.

Replayed samples never enter the statistics: nothing here forgets, so
learning from them again would only count them twice.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterator, Mapping

import numpy as np

from edgecvm.formats.head_file import ConseBranch, HeadParams
from edgecvm.learning.blend_calibration import CHUNK, CalibrationPool, distinct_rows, fit_blend, leave_one_out
from edgecvm.learning.conse import ConseCodes, conse_embed
from edgecvm.learning.open_set import Evidence, load_evidence
from edgecvm.learning.optim import Adam
from edgecvm.learning.projection_head import ProjectionHead
from edgecvm.learning.replay import ReplayBatch
from edgecvm.learning.spd_solve import (
    CholeskyFactor,
    cholesky_in_place,
    low_rank_solver,
    panels,
    solve_factored,
)

_PENDING = 64  # scatter updates buffered and added to the stored scatter 64 at a time
_LOW_RANK_ROWS = 512  # the first scatter updates, kept as rows (2.6 MB at F = 1280) while they make solving cheaper
_ANCHOR_RIDGE = 1e-4  # rho: keeps A A' invertible when two anchors nearly coincide
_MIN_COUNT = 2  # a sample calibrates the blend only if the solved head knew its class from >= this many
_CALIBRATION_LR = 0.02
MAX_FEATURE = 1e9  # larger |values| would overflow the float32 scatter (squared, summed): the update is skipped
_MIN_SOLVE_EVERY = 16  # samples between solves while few have been seen (an F x F solve is ~0.1 s)
_MIN_RESCUE_SHRINKAGE = 1e-6  # the first shrinkage tried when the covariance is numerically not positive definite
_CALIBRATION_POOL = 1024  # most replayed samples the open-set threshold is set on (calibration_pool_size)
_BLEND_POOL = 256  # the most recent of them, which the blend is fitted on (128 / 256 / 512 compared in docs/results.md)
_SOLVE_COLUMNS = 256  # pooled samples solved at once
_SOLVE_EVERY = 256  # samples between scheduled solves once many have been seen
# Without replay, a class calibrates the blend only if known from >= this x the median count (see _calibration_count)
_CALIBRATE_FROM = 0.5


def calibration_pool_size(replay_capacity: int) -> int:
    """Replayed samples the head pools for a replay buffer of ``replay_capacity``: half of it, within
    [``_BLEND_POOL``, ``_CALIBRATION_POOL``].

    The open-set threshold is a 5 % quantile of the pooled samples' scores: over 256 it moved the share of taught
    frames accepted by +-2.5 points from one solve to the next, over about 1,000 by about half that
    (docs/results.md, "Open set"). The pool is drawn from the replay buffer, and its rows, their scores and ConSE
    embeddings cost 4.5 KB each, so a profile that holds a smaller buffer holds a smaller pool (the Raspberry Pi
    Zero 2 W's 1,000 features: 500).
    """
    return max(_BLEND_POOL, min(_CALIBRATION_POOL, replay_capacity // 2))


class ClassStatistics:
    """Running class sums, counts and pooled within-class scatter, added to one sample at a time.

    Stored in ``dtype`` (float32 on the device: the F x F scatter is 6.5 MB
    instead of 13 MB for F = 1280; measured: the same accuracy as float64 to
    0.1 point, see docs/results.md). Counts are exact integers and the
    Ledoit-Wolf fourth-moment sum a Python float.

    The scatter is symmetric, so it is kept in the strict upper triangle of
    one F x F array and a diagonal vector; the array's lower triangle and
    diagonal are scratch, where each solve builds the shrunk covariance and
    factorises it in place (``covariance_factor``). Why: the solve needs the
    covariance next to the statistics it came from, and in the free triangle
    it needs no second F x F array (6.5 MB at F = 1280).

    The first scatter updates (up to ``_LOW_RANK_ROWS``, at most F/2) stay
    buffered as rows: while they are all there is, the covariance is a
    multiple of the identity plus a low-rank term, and ``solve`` uses the
    rows directly (spd_solve.solve_low_rank). That is when solves are most
    frequent (every 16 samples early on), and a solve through the rows is
    about twice as fast as through the F x F factor. Only after that is the
    scatter added to the square array, whose pages are not touched before,
    and only then does a checkpoint hold it: early checkpoints stay small.
    """

    def __init__(self, feature_dim: int, dtype: type[np.floating] = np.float32) -> None:
        self.feature_dim = feature_dim
        self.dtype = np.dtype(dtype)
        self.sums = np.zeros((0, feature_dim), dtype=self.dtype)
        self.counts = np.zeros(0, dtype=np.int64)
        self._square = np.zeros((feature_dim, feature_dim), dtype=self.dtype)  # strict upper: scatter; rest: scratch
        self._diag = np.zeros(feature_dim, dtype=self.dtype)  # the scatter's diagonal
        self.fourth = 0.0  # running sum of |w d|^2 squared, for the Ledoit-Wolf estimate
        self._pending = np.zeros((self._low_rank_rows(), feature_dim), dtype=self.dtype)
        self._n_pending = 0

    def _low_rank_rows(self) -> int:
        """Rows buffered before the first flush: up to F/2 they make a cheaper solve (at least ``_PENDING``)."""
        return max(_PENDING, min(_LOW_RANK_ROWS, self.feature_dim // 2))

    @property
    def low_rank(self) -> bool:
        """True while every scatter update is still a buffered row (nothing added to the square array yet)."""
        return not self._diag.any()  # the diagonal of a sum of outer products is 0 only if the sum is

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    def add(self, features: np.ndarray, labels: np.ndarray) -> None:
        """Welford: d = x - mean_y before the update adds c/(c+1) d d' to the scatter (c = count of y so far)."""
        grow = int(labels.max()) + 1 - self.counts.size
        if grow > 0:
            self.sums = np.concatenate([self.sums, np.zeros((grow, self.feature_dim), dtype=self.dtype)])
            self.counts = np.concatenate([self.counts, np.zeros(grow, dtype=np.int64)])
        for x, y in zip(features, labels, strict=True):
            c = int(self.counts[y])
            if c:
                d = x - self.sums[y] / c
                w = c / (c + 1)
                self.fourth += (w * float(d @ d)) ** 2
                if self._n_pending == self._pending.shape[0]:
                    self._flush()
                self._pending[self._n_pending] = d * math.sqrt(w)
                self._n_pending += 1
            self.sums[y] += x
            self.counts[y] += 1

    def _flush(self) -> None:
        """Add the buffered updates to the stored scatter: only ever when the buffer is full, so the rounding of the
        statistics depends on the samples alone, not on when the learner predicted or checkpointed."""
        rows = self._pending[: self._n_pending]
        for j, e in panels(self.feature_dim):
            # rows[:, :e]' rows[:, j:e], kept strictly above the diagonal (column j + c, row r: r < j + c)
            self._square[:e, j:e] += np.triu(rows[:, :e].T @ rows[:, j:e], 1 - j)
        self._diag += np.einsum("nf,nf->f", rows, rows)
        self._n_pending = 0
        if self._pending.shape[0] > _PENDING:  # the low-rank rows are in the square array now: free them
            self._pending = np.zeros((_PENDING, self.feature_dim), dtype=self.dtype)

    def _scatter_into_lower(self, with_pending: bool) -> None:
        """Write the scatter (and the buffered updates) into the lower triangle and diagonal of the square array."""
        a, rows = self._square, self._pending[: self._n_pending if with_pending else 0]
        for j, e in panels(self.feature_dim):
            a[e:, j:e] = a[j:e, e:].T
            block = a[j:e, j:e]
            below = np.tril_indices(e - j, -1)
            block[below] = block.T[below]
            block[np.diag_indices(e - j)] = self._diag[j:e]
            if rows.size:
                product = rows[:, j:].T @ rows[:, j:e]
                a[e:, j:e] += product[e - j:]
                block[np.tril_indices(e - j)] += product[: e - j][np.tril_indices(e - j)]

    def within_scatter(self) -> np.ndarray:
        """The pooled within-class scatter of every sample added, as a new array (buffered updates stay buffered)."""
        self._scatter_into_lower(with_pending=True)
        return np.tril(self._square) + np.tril(self._square, -1).T

    def solver(self, shrinkage: float | None) -> tuple[Callable[[np.ndarray], np.ndarray] | None, float]:
        """A function giving ``C^-1 rhs`` for the shrunk covariance C (see ``covariance_factor``), for as many blocks
        of right-hand sides as needed until the statistics change, and the shrinkage used; None when C is not
        numerically positive definite. Through the buffered rows while they are the whole scatter, else the factor."""
        if self.low_rank:
            rows, n = self._pending[: self._n_pending], max(self.n, 1)
            gram = (rows @ rows.T).astype(np.float64)
            diag = np.einsum("nf,nf->f", rows, rows, dtype=np.float64) / n
            # |S/n|^2 = |rows' rows|^2 / n^2 = |rows rows'|^2 / n^2: the two products share their nonzero eigenvalues
            mu, shrinkage = self._shrinkage(diag, n, shrinkage, lambda: float(np.einsum("ij,ij->", gram, gram)) / (n * n))
            if shrinkage > 0.0:
                try:
                    return low_rank_solver(rows, gram, shrinkage * mu, (1.0 - shrinkage) / n), shrinkage
                except np.linalg.LinAlgError:  # a numerically singular r x r system: the F x F factor decides
                    pass
        factor, used = self.covariance_factor(shrinkage)
        return (None if factor is None else functools.partial(solve_factored, factor)), used

    def _shrinkage(self, diag: np.ndarray, n: int, shrinkage: float | None,
                   squared_norm: Callable[[], float]) -> tuple[float, float]:
        """mu = trace(S/n)/F and delta: ``shrinkage``, or Ledoit-Wolf's from ``squared_norm()`` = |S/n|^2 (Frobenius)."""
        dim = self.feature_dim
        # No within-class scatter yet (one example per class so far): the identity, i.e. nearest class mean.
        mu = float(diag.sum()) / dim or 1.0
        if shrinkage is None:
            sq = squared_norm()
            spread = sq - dim * mu * mu  # |S/n - mu I|^2
            noise = max(0.0, (self.fourth / n - sq) / n)
            shrinkage = 1.0 if spread <= 0 else min(1.0, noise / spread)
        # A Python float: an np.float64 would make the scaling round through float64 (NumPy 2 promotion), so a
        # resumed learner (plain floats from the state file) would answer a float32 ulp away from the live one.
        return mu, float(shrinkage)

    def covariance_factor(self, shrinkage: float | None) -> tuple[CholeskyFactor | None, float]:
        """The Cholesky factor of ``(1 - delta) S/n + delta * trace(S/n)/F * I``, built and factorised in the scratch
        triangle, and delta (Ledoit-Wolf when ``shrinkage`` is None); the factor is None when that matrix is not
        numerically positive definite."""
        n, dim = max(self.n, 1), self.feature_dim
        self._scatter_into_lower(with_pending=True)
        a = self._square
        diag = a.diagonal().astype(np.float64) / n

        def squared_norm() -> float:  # over the whole symmetric matrix, from its lower triangle
            off = sum(float(np.einsum("ij,ij->", below, below, dtype=np.float64))
                      + float(np.einsum("i,i->", block[idx], block[idx], dtype=np.float64))
                      for below, block, idx in _strict_lower(a))
            return 2.0 * off / (n * n) + float(diag @ diag)

        mu, shrinkage = self._shrinkage(diag, n, shrinkage, squared_norm)
        scale = (1.0 - shrinkage) / n
        for below, block, idx in _strict_lower(a):
            below *= scale
            block[idx] *= scale
        a[np.diag_indices(dim)] = diag * (1.0 - shrinkage) + shrinkage * mu
        try:
            return cholesky_in_place(a), shrinkage
        except np.linalg.LinAlgError:
            return None, shrinkage

    def state_arrays(self) -> dict[str, np.ndarray]:
        if self.low_rank:  # the buffered rows are the whole scatter
            scatter = np.zeros((0, self.feature_dim), dtype=self.dtype)
        else:
            self._scatter_into_lower(with_pending=False)  # the whole stored scatter, mirrored in place: no copy to save
            scatter = self._square
        return {"sums": self.sums, "counts": self.counts, "scatter": scatter,
                "pending": self._pending[: self._n_pending], "fourth": np.array([self.fourth])}

    def load_state_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        sums, counts, scatter, fourth = (arrays[k] for k in ("sums", "counts", "scatter", "fourth"))
        dim = self.feature_dim
        if (sums.ndim != 2 or sums.shape[1] != dim or counts.shape != (sums.shape[0],)
                or scatter.shape not in ((dim, dim), (0, dim))):
            raise ValueError(f"class statistics have shapes {sums.shape}, {counts.shape}, {scatter.shape}")
        if (counts < 0).any() or fourth.shape != (1,) or not all(np.isfinite(a).all() for a in (sums, scatter, fourth)):
            raise ValueError("class statistics hold negative counts or NaN/Inf")
        self.sums, self.counts = sums.astype(self.dtype), counts.astype(np.int64)
        diag = scatter.diagonal().astype(self.dtype) if scatter.size else np.zeros(dim, dtype=self.dtype)
        rows = _PENDING if diag.any() else self._low_rank_rows()
        pending = arrays.get("pending", np.zeros((0, dim), dtype=self.dtype))  # older states were saved flushed
        if pending.ndim != 2 or pending.shape[1] != dim or pending.shape[0] > rows or not np.isfinite(pending).all():
            raise ValueError(f"buffered scatter updates have shape {pending.shape} or hold NaN/Inf")
        if scatter.size:
            self._square[...] = scatter
        else:  # (0, F): nothing beyond the buffered rows; a fresh array, whose pages stay untouched until used
            self._square = np.zeros((dim, dim), dtype=self.dtype)
        self._diag = diag
        self.fourth = float(fourth[0])
        self._pending = np.zeros((rows, dim), dtype=self.dtype)
        self._pending[: pending.shape[0]] = pending
        self._n_pending = pending.shape[0]

    def nbytes(self, n_classes: int) -> int:
        return (self._square.nbytes + self._diag.nbytes + self._pending.nbytes
                + n_classes * (self.feature_dim * self.dtype.itemsize + 8))


def _strict_lower(a: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]]:
    """Per column panel: the view below its diagonal block, that block, and the block's strict-lower indices."""
    for j, e in panels(a.shape[0]):
        yield a[e:, j:e], a[j:e, j:e], np.tril_indices(e - j, -1)


class AnalyticHead:
    """Head method "lda" (see the module docstring).

    The defaults are the product. The other settings exist for comparison:
    ``use_conse=False`` (the discriminant alone) and ``calibration_pool=0``
    (the blend always calibrated prequentially) are the evaluation's
    variants (eval/variants.py); a fixed ``shrinkage`` and float64
    ``dtype`` let tests check the solve against a textbook LDA and the
    float32 statistics against float64.
    """

    def __init__(
        self,
        name: str,
        head: HeadParams,
        shrinkage: float | None = None,
        use_conse: bool = True,
        dtype: type[np.floating] = np.float32,
        calibration_pool: int = _CALIBRATION_POOL,
    ) -> None:
        self.name = name
        self.base = head
        self.shrinkage = shrinkage
        self.use_conse = use_conse and head.conse is not None
        self.stats = ClassStatistics(head.feature_dim, dtype)  # what the head is solved from
        # In a fleet (learning/fleet.py): what this device learned itself, while ``stats`` also holds the others'
        self.own: ClassStatistics | None = None
        self.pool = CalibrationPool(calibration_pool if self.use_conse else 0, head.feature_dim)
        self._pool_conse = ConseCodes(head.conse, CHUNK) if self.use_conse else None
        self.anchors = np.zeros((0, head.concept_dim), dtype=np.float32)  # the learner's known anchors, by row
        # log of the discriminant's scale, and the ConSE gain; start: the ConSE head as exported
        self.blend = {"log_scale": np.zeros(1, dtype=np.float64),
                      "conse_gain": np.array([head.conse.weight * head.temperature if self.use_conse else 0.0])}
        self.optimizer = Adam(self.blend, lr=_CALIBRATION_LR)
        self._scale_set = False
        self._since_solve = 0  # updates since the last solve, scheduled or before predicting
        self._since_refit = 0  # updates since the last scheduled solve, which also refits the blend
        self._solved: _Solved | None = None
        self._projection: ProjectionHead | None = None  # the exported head until the first solve
        self._calibration: Evidence | None = None  # the pooled samples' leave-one-out evidence at the last blend fit

    # ---- learning -------------------------------------------------------------------------------

    def update(
        self, features: np.ndarray, targets: np.ndarray, known_anchors: np.ndarray, replay: ReplayBatch | None
    ) -> float:
        if not float(np.max(np.abs(features), initial=0.0)) < MAX_FEATURE:  # also NaN/Inf: skip, state unchanged
            return math.nan
        pooled = self.use_conse and replay is not None and self.pool.capacity > 0
        if pooled:  # the blend is fitted on replayed samples at the next solve (blend_calibration.py)
            self.pool.add(replay.features, replay.labels)
        # Without replay the new samples calibrate it, test-then-train; either way their loss is reported.
        loss = self._calibrate(features, targets, step=not pooled) if self.use_conse else 0.0
        self.stats.add(features.astype(self.stats.dtype, copy=False), targets)
        if self.own is not None:
            self.own.add(features.astype(self.own.dtype, copy=False), targets)
        self.anchors = np.array(known_anchors, dtype=np.float32)
        self._since_solve += features.shape[0]
        self._since_refit += features.shape[0]
        self._projection = None
        # Early on (few-shot) every sample moves the means a lot and the calibration needs a head that knows the
        # new classes: solve after every n/8 samples (at least _MIN_SOLVE_EVERY), at most every _SOLVE_EVERY.
        # The schedule counts only its own solves: when the device predicts does not change what it learns.
        if self._since_refit >= min(_SOLVE_EVERY, max(_MIN_SOLVE_EVERY, self.stats.n // 8)):
            self._solve(refit=True)
        return loss

    def adopt_statistics(self, stats: ClassStatistics, own: ClassStatistics, known_anchors: np.ndarray) -> None:
        """Solve from ``stats`` from now on (a fleet's and this device's, learning/fleet.py), while ``own`` goes on
        adding what this device learns itself: shared again, it never counts anything twice."""
        self.stats, self.own = stats, own
        self.anchors = np.array(known_anchors, dtype=np.float32)
        self._solved, self._projection = None, None
        self._solve(refit=True)

    def _calibrate(self, features: np.ndarray, targets: np.ndarray, step: bool = True) -> float:
        """The last solved head's loss on the new samples, and (``step``) one Adam step on (log_scale, conse_gain) against it."""
        solved = self._solved
        if solved is None:
            return 0.0
        usable = targets < solved.counts.size
        usable[usable] = solved.counts[targets[usable]] >= self._calibration_count(solved.counts)
        if not usable.any():
            return 0.0
        x, y = features[usable], targets[usable]
        scores = solved.discriminant(x)
        prior = conse_embed(x, self.base.conse) @ solved.anchors.T
        if not self._scale_set:  # first calibration: put the discriminant on the scale of the ConSE logits
            spread = float(np.std(scores))
            self.blend["log_scale"][0] = -math.log(spread) if spread > 0 else 0.0
            self._scale_set = True
        scale, gain = math.exp(self.blend["log_scale"][0]), self.blend["conse_gain"][0]
        logits = scale * scores + gain * prior
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        rows = np.arange(y.size)
        loss = float(-np.mean(np.log(np.maximum(p[rows, y], 1e-300))))
        p[rows, y] -= 1.0
        p /= y.size
        grads = {"log_scale": np.array([scale * float(np.sum(p * scores))]),
                 "conse_gain": np.array([float(np.sum(p * prior))])}
        if step and math.isfinite(loss) and all(np.isfinite(g).all() for g in grads.values()):
            self.optimizer.step(self.blend, grads)
        return loss

    def _calibration_count(self, counts: np.ndarray) -> float:
        """Fewest examples a class must have had at the last solve for its new samples to calibrate the blend.

        A prequential sample of a class known from c examples says how far to
        trust a discriminant built on c examples; the test-time question is
        about the typical class. Calibrating on every sample with c >= 2
        over-weighted ConSE on the full stream: the gain/scale ratio ended
        near 120 where 20-40 is best, 65.2 % instead of 66.0 %
        (docs/results.md). So only classes with at least ``_CALIBRATE_FROM``
        x the median count of the known classes take part.
        """
        seen = counts[counts > 0]
        typical = float(np.median(seen)) if seen.size else 0.0
        return max(_MIN_COUNT, _CALIBRATE_FROM * typical)

    def _solve(self, refit: bool = False) -> None:
        """Solve the discriminant from the statistics; ``refit``: also fit the blend on the pool (scheduled solves only,
        so a solve before predicting, or after loading a state, answers exactly as the checkpointed learner)."""
        counts = self.stats.counts
        seen = counts > 0
        means = np.zeros_like(self.stats.sums)
        means[seen] = self.stats.sums[seen] / counts[seen, None]
        pooled = self.pool.usable_rows(counts) if refit else np.zeros(0, np.int64)  # the pool only serves the fit
        solve, shrinkage = self._covariance_solver()
        weights = solve(means.T)  # (F, K) = S^-1 [mu_1 .. mu_K]
        offsets = 0.5 * np.einsum("fk,kf->k", weights, means)
        if pooled.size:
            self._fit_blend(pooled, weights, offsets, solve, means, shrinkage)
        weights[:, ~seen] = 0.0  # a known concept without samples (cannot happen via the learner) scores 0
        # Centred across the known concepts: the same decision, but no shared offset for A+ to spread onto
        # the concepts not taught yet.
        weights -= weights.mean(axis=1, keepdims=True)
        offsets -= offsets.mean()
        self._solved = _Solved(weights, offsets, counts.copy(), self.anchors[: counts.size].copy())
        self._since_solve = 0
        self._since_refit = 0 if refit else self._since_refit
        self._projection = None
        # The exported projection only answers until the first solve (statistics are never emptied again), and
        # its F x D weights are 1.9 MB of a 100 MB budget: keep the rest of the exported head (ConSE, sizes).
        if self.base.params:  # once, not at every solve
            self.base = dataclasses.replace(self.base, params={})

    def _covariance_solver(self) -> tuple[Callable[[np.ndarray], np.ndarray], float]:
        """A function giving S^-1 rhs for the shrunk covariance S (until the statistics change), and the shrinkage used.

        With a tiny shrinkage and fewer samples than dimensions, S is positive
        definite only on paper and its float32 Cholesky can fail; the shrinkage
        is then raised tenfold (from 1e-6) until it succeeds, at the latest at
        1, where S is a multiple of the identity.
        """
        shrinkage = self.shrinkage
        while True:
            solve, used = self.stats.solver(shrinkage)
            if solve is not None:
                return solve, used
            if used >= 1.0:  # a multiple of the identity: only NaN/Inf in the statistics can fail it
                raise np.linalg.LinAlgError("the shrunk covariance is not positive definite even at shrinkage 1")
            shrinkage = min(1.0, max(10.0 * used, _MIN_RESCUE_SHRINKAGE))

    def _fit_blend(self, pooled: np.ndarray, weights: np.ndarray, offsets: np.ndarray,
                   solve: Callable[[np.ndarray], np.ndarray], means: np.ndarray, shrinkage: float) -> None:
        """Set (scale, gain) from the newest ``_BLEND_POOL`` of the pooled replayed samples (rows ``pooled`` of the
        pool, oldest first) and the open-set calibration from all of them, each scored leave-one-out
        (blend_calibration.py); ``solve`` gives S^-1 rhs."""
        counts, y = self.stats.counts, self.pool.labels[pooled]
        # Early on the pool holds each stored sample many times (1,024 replay draws from the few seen so far): each
        # distinct one is solved and scored by ConSE once, _SOLVE_COLUMNS at a time so the solve's (F, m) right-hand
        # sides and solution stay ~1.3 MB each however large the pool, and scored leave-one-out once per label.
        distinct, column = distinct_rows(self.pool.features, pooled)
        _, first, pair = np.unique(column * counts.size + y, return_index=True, return_inverse=True)
        pair_column, pair_y = column[first], y[first]
        downdate = (1.0 - shrinkage) / self.stats.n
        pair_scores = np.empty((first.size, counts.size))
        for start in range(0, len(distinct), _SOLVE_COLUMNS):
            s_inv = solve(distinct[start: start + _SOLVE_COLUMNS].astype(means.dtype).T)
            members = np.flatnonzero((pair_column >= start) & (pair_column < start + _SOLVE_COLUMNS))
            for i in range(0, members.size, CHUNK):
                m = members[i: i + CHUNK]
                pair_scores[m] = leave_one_out(distinct[pair_column[m]], pair_y[m], weights, offsets, s_inv, means,
                                               counts, downdate, pair_column[m] - start)
        scores = pair_scores[pair]
        if not np.isfinite(scores).all():  # a near-singular downdate: keep the blend the head has
            return
        self._calibration = None  # replaced below: not held next to its successor at the peak of ``learn``
        # CHUNK rows at a time (the classifier's (m, 1000) logits and their argpartition would be ~20 MB for 1,024
        # pooled samples), each distinct row's top classes kept while it stays pooled
        conse_distinct = self._pool_conse.embed(distinct)
        prior = (conse_distinct @ self.anchors[: counts.size].T)[column]
        fit = slice(-_BLEND_POOL, None)
        spread = float(np.std(scores[fit]))
        start = (1.0 / spread if spread > 0 else 1.0, self.base.conse.weight * self.base.temperature)
        scale, gain = fit_blend(scores[fit], prior[fit], y[fit], start)
        self.blend["log_scale"][0], self.blend["conse_gain"][0] = math.log(scale), gain
        self._scale_set = True
        # The open-set threshold is set on every pooled sample (open_set.py; a 5 % quantile of 256 moved the share of
        # taught frames accepted by +-2.5 points): their logits as the device would answer, with the discriminant
        # centred across the known concepts as _solve centres it.
        scores -= scores.mean(axis=1, keepdims=True)  # in place: (n, K) float64, 1.6 MB at 200 concepts
        scores *= scale
        scores += gain * prior
        self._calibration = Evidence(scores.astype(np.float32), conse_distinct[column], gain)

    # ---- predicting -----------------------------------------------------------------------------

    def embed(self, features: np.ndarray, conse: np.ndarray | None = None) -> np.ndarray:
        if self._projection is None:
            self._solve_if_stale()
            self._projection = ProjectionHead(self.as_head_params())
        return self._projection.embed_unit(features, conse)

    def _solve_if_stale(self) -> None:
        if self.stats.n and (self._solved is None or self._since_solve):
            self._solve()

    def evidence(self, features: np.ndarray) -> Evidence | None:
        """The blended logits over the known concepts and the ConSE embedding (open_set.py); None without a solve."""
        self._solve_if_stale()
        solved = self._solved
        if solved is None or not self.use_conse:
            return None
        scale = math.exp(self.blend["log_scale"][0]) if self._scale_set else 1.0
        gain = float(self.blend["conse_gain"][0])
        zero_shot = conse_embed(features, self.base.conse)
        return Evidence(scale * solved.discriminant(features) + gain * (zero_shot @ solved.anchors.T), zero_shot, gain)

    def calibration_evidence(self) -> Evidence | None:
        return self._calibration

    def as_head_params(self) -> HeadParams:
        """The current solution as an ordinary linear head (what ``embed`` evaluates); the exported head before any teaching."""
        if self._solved is None:
            return self.base
        head, solved = self.base, self._solved
        a = solved.anchors.astype(np.float64)
        pinv = np.linalg.solve(a @ a.T + _ANCHOR_RIDGE * np.eye(a.shape[0]), a).T  # (D, K)
        scale = math.exp(self.blend["log_scale"][0]) if self._scale_set else 1.0
        # in the statistics' precision and in place: an F x D float64 product and its scaled copy would be 7.8 MB
        # beside the head at every solve before predicting (serve answers after updates)
        w = solved.weights @ pinv.T.astype(solved.weights.dtype)
        w *= scale
        b = -scale * (pinv @ solved.offsets)
        conse = None
        if head.conse is not None:
            gain = float(self.blend["conse_gain"][0]) if self.use_conse else 0.0
            conse = ConseBranch(head.conse.fc_w, head.conse.fc_b, head.conse.anchors, head.conse.top_t, gain)
        return HeadParams("linear", head.feature_dim, head.concept_dim,
                          {"w": w.astype(np.float32, copy=False), "b": b.astype(np.float32)},
                          temperature=head.temperature, conse=conse)

    # ---- persistence ----------------------------------------------------------------------------

    def state_arrays(self) -> dict[str, np.ndarray]:
        arrays = {f"stats.{k}": v for k, v in self.stats.state_arrays().items()}
        if self.own is not None:
            arrays.update({f"own.{k}": v for k, v in self.own.state_arrays().items()})
        arrays.update({f"blend.{k}": v for k, v in self.blend.items()})
        arrays.update({f"opt.{k}": v for k, v in self.optimizer.state_arrays().items()})
        arrays.update({f"pool.{k}": v for k, v in self.pool.state_arrays().items()})
        if self._pool_conse is not None:  # a resumed run continues with the very codes (conse.ConseCodes)
            arrays.update({f"conse_codes.{k}": v for k, v in self._pool_conse.state_arrays().items()})
        arrays["anchors"] = self.anchors
        if self._calibration is not None:
            arrays.update(self._calibration.state_arrays("openset."))
        arrays["scale_set"] = np.array([self._scale_set])
        arrays["since_refit"] = np.array([self._since_refit])
        return arrays

    def load_state_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        try:
            self.stats.load_state_arrays({k[6:]: v for k, v in arrays.items() if k.startswith("stats.")})
            own = {k[4:]: v for k, v in arrays.items() if k.startswith("own.")}
            self.own = ClassStatistics(self.stats.feature_dim, self.stats.dtype) if own else None
            if self.own is not None:
                self.own.load_state_arrays(own)
                size = self.own.counts.size
                if size > self.stats.counts.size or (self.own.counts > self.stats.counts[:size]).any():
                    raise ValueError("the device's own class statistics hold more samples than the head's")
            anchors, blend = arrays["anchors"], {k: arrays[f"blend.{k}"] for k in self.blend}
            pool = {k[5:]: v for k, v in arrays.items() if k.startswith("pool.")}
            if pool:  # states written before the pool existed have none: it refills from replay
                self.pool.load_state_arrays(pool)
            codes = {k[12:]: v for k, v in arrays.items() if k.startswith("conse_codes.")}
            if codes and self._pool_conse is not None:  # without them, the next blend fit computes them afresh
                self._pool_conse.load_state_arrays(codes)
        except KeyError as exc:
            raise ValueError(f"analytic head state lacks {exc}") from None
        if anchors.ndim != 2 or anchors.shape[1] != self.base.concept_dim or anchors.shape[0] < self.stats.counts.size:
            raise ValueError(f"known anchors {anchors.shape} do not cover the {self.stats.counts.size} classes")
        for key, value in blend.items():
            if value.shape != (1,) or not np.isfinite(value).all():
                raise ValueError(f"blend parameter {key!r} is not one finite number")
            self.blend[key][...] = value
        self.optimizer.load_state_arrays({k[4:]: v for k, v in arrays.items() if k.startswith("opt.")})
        self.anchors = anchors.astype(np.float32)
        self._scale_set = bool(arrays.get("scale_set", np.array([False]))[0])
        self._since_refit = int(arrays.get("since_refit", np.array([0]))[0])
        self._calibration = load_evidence(arrays, "openset.", self.base.concept_dim)
        self._solved, self._projection = None, None
        if self.stats.n:
            self._solve()

    def nbytes(self, replay_capacity: int = 0) -> int:
        """Statistics, the exported head it starts from, the solved head, and the solve's temporaries.

        Sized for the classes known now (the statistics grow by F values per new concept).
        """
        f, d, item = self.base.feature_dim, self.base.concept_dim, self.stats.dtype.itemsize
        classes = max(self.stats.counts.size, 1)
        exported = ProjectionHead(self.base).nbytes()  # its weights and the frozen ConSE branch
        solved = classes * (f * item + item + 8 + d * 4)  # LDA weights, offsets, counts, anchors at the last solve
        # the covariance is built and factored in the statistics' own array (no F x F here): the right-hand sides
        # (means, then pooled samples _SOLVE_COLUMNS at a time) and their solutions
        solve = 2 * f * (classes + min(self.pool.capacity, _SOLVE_COLUMNS)) * item
        # scoring the pool, CHUNK samples at a time: x, x - mu_y and S^-1 (x - mu_y) in float64, the classifier's
        # 1,000 logits and their argpartition, the top-T anchors; then every sample's scores, prior and logits, and
        # the blend's fit on the newest _BLEND_POOL (its (n, K, 2) stack and temporaries)
        top_t = self.base.conse.top_t if self.base.conse is not None else 0
        fit = (min(self.pool.capacity, CHUNK) * (3 * f * 8 + top_t * d * 4 + 1000 * 12)
               + self.pool.capacity * 4 * classes * 8 + min(self.pool.capacity, _BLEND_POOL) * 6 * classes * 8)
        # predicting turns the solution into a linear head (its weights in the statistics' precision, then the
        # float32 head it keeps), after the solve's temporaries are gone: the larger of the two phases counts
        projection = f * d * item + f * d * 4 + d * 4
        calibration = self.pool.capacity * (classes + d) * 4  # the open-set evidence of the pooled samples
        calibration += ConseCodes.nbytes_for(self.pool.capacity, top_t)  # their ConSE classes, kept between fits
        own = self.own.nbytes(classes) if self.own is not None else 0
        return (self.stats.nbytes(classes) + own + exported + solved + max(solve + fit, projection)
                + self.pool.nbytes() + calibration)


class _Solved:
    """The last solution: LDA weights and offsets for the classes known then, and their anchors."""

    def __init__(self, weights: np.ndarray, offsets: np.ndarray, counts: np.ndarray, anchors: np.ndarray) -> None:
        self.weights, self.offsets, self.counts, self.anchors = weights, offsets, counts, anchors

    def discriminant(self, features: np.ndarray) -> np.ndarray:
        return features @ self.weights - self.offsets

