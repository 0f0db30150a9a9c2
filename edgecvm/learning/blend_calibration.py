"""How far to trust the discriminant against the ConSE prior, fitted on replayed samples scored leave-one-out.

The analytic head (analytic_head.py) answers with ``scale * lda(f) + gain *
conse(f)`` over the known concepts. The right ratio depends on how many
examples the statistics hold: with five per class the ImageNet prior is worth
more than noisy class means, with two hundred it is worth little. Measured
offline on the val images (docs/results.md), the best fixed ratio would add
0.5 points on the full stream and about 4 points at 5 and 20 shots over the
prequential calibration, which tunes the blend on heads that had *fewer*
examples than the one being tested.

Replayed samples give a better question to fit on: they are old samples of
the known classes, already inside the statistics. Scored by the current
solution they would look too easy (each pulls its own class mean towards
itself), but the score with the sample left out of its class mean is exact
and cheap: with ``d = x - mu_y``, ``q = d' S^-1 d`` and ``n`` examples of
class y, its own class mean without it gives

    s_y^loo(x) = s_y(x) - q * (1 / (n - 1) + 1 / (2 (n - 1)^2))

and the shared covariance without its share of the scatter is a rank-one
downdate, whose inverse Sherman-Morrison gives from ``S^-1 d`` alone. The
second part matters with few examples: at 5 images per class, correcting the
means only left the scores so confident that the fit all but dropped the
prior (37 % instead of 49 %, measured; with both parts 52 %).

The two numbers are then the minimiser of the cross-entropy of those
leave-one-out logits, a convex problem in (scale, gain) solved by Newton's
method in a few steps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

_NEWTON_STEPS = 30
_NEWTON_TOL = 1e-6  # relative step size at which the fit has converged
_MIN_SCALE_FRACTION = 1e-3  # of the starting scale: the discriminant's weight stays positive
CHUNK = 64  # pooled samples scored at once (leave_one_out here, their ConSE prior in analytic_head)
_RIDGE = 1e-9  # keeps the 2 x 2 Hessian invertible when one of the two scores is constant


class CalibrationPool:
    """The most recent replayed samples (a random sample of the replay buffer), in a ring of fixed size.

    float16 like the replay buffer they come from, so 1,024 rows of 1,280
    features cost 2.6 MB.
    """

    def __init__(self, capacity: int, feature_dim: int) -> None:
        self.capacity = capacity
        self.features = np.zeros((capacity, feature_dim), dtype=np.float16)
        self.labels = np.zeros(capacity, dtype=np.int64)
        self.size = 0
        self._next = 0

    def add(self, features: np.ndarray, labels: np.ndarray) -> None:
        if not self.capacity:
            return
        for x, y in zip(features[-self.capacity:], labels[-self.capacity:], strict=True):
            self.features[self._next], self.labels[self._next] = x, y
            self._next = (self._next + 1) % self.capacity
            self.size = min(self.size + 1, self.capacity)

    def usable_rows(self, counts: np.ndarray) -> np.ndarray:
        """Indices into ``features`` / ``labels`` of the rows whose class has >= 2 examples (leave-one-out needs one
        left), oldest first. Indices, not a copy: the rows are read a chunk at a time, in float16 as stored (each use
        casts them exactly), so scoring the pool holds no second copy of it at the peak of ``learn``."""
        order = np.roll(np.arange(self.size), -self._next) if self.size == self.capacity else np.arange(self.size)
        labels = self.labels[order]
        keep = labels < counts.size
        keep[keep] = counts[labels[keep]] >= 2
        return order[keep]

    def state_arrays(self) -> dict[str, np.ndarray]:
        return {"features": self.features[: self.size], "labels": self.labels[: self.size],
                "next": np.array([self._next])}

    def load_state_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Restore a saved pool. Saved by a profile with a larger pool (a state taught on a workstation, resumed on a
        Raspberry Pi Zero), only its newest ``capacity`` rows are kept, as if the pool had always been this size."""
        features, labels, nxt = arrays["features"], arrays["labels"], arrays["next"]
        size = features.shape[0]
        if (features.ndim != 2 or features.shape[1] != self.features.shape[1] or labels.shape != (size,)
                or nxt.shape != (1,) or not 0 <= int(nxt[0]) <= size):
            raise ValueError(f"calibration pool has shapes {features.shape}, {labels.shape}, {nxt.shape}")
        if (labels < 0).any() or not np.isfinite(features).all():
            raise ValueError("calibration pool holds negative labels or NaN/Inf")
        nxt = int(nxt[0])
        if size == self.capacity:  # the same ring, as saved
            order = np.arange(size)
        else:  # oldest first, the newest that fit kept; the ring then grows (or wraps) from the end
            order = np.roll(np.arange(size), -nxt)[max(size - self.capacity, 0):]
            size = order.size
            nxt = size % self.capacity if self.capacity else 0
        self.features[:size], self.labels[:size] = features[order], labels[order]
        self.size, self._next = size, nxt

    def nbytes(self) -> int:
        return self.features.nbytes + self.labels.nbytes


def distinct_rows(x: np.ndarray, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of ``x`` (or of ``x[rows]``, without copying the rest; first occurrences, in order) and,
    per row, the index of its distinct row.

    By hashing each row's bytes: ``np.unique(axis=0)`` sorts rows as opaque
    records, 18 ms for 256 rows of 1,280 floats against under 1 ms here.
    """
    rows = np.arange(len(x)) if rows is None else rows
    first: dict[bytes, int] = {}
    column = np.array([first.setdefault(x[i].tobytes(), len(first)) for i in rows], dtype=np.int64)
    keep = np.zeros(len(first), dtype=np.int64)
    keep[column[::-1]] = rows[::-1]  # the lowest row index of each distinct row wins (written last)
    return x[keep], column


def leave_one_out(
    x: np.ndarray, y: np.ndarray, weights: np.ndarray, offsets: np.ndarray, s_inv_x: np.ndarray,
    means: np.ndarray, counts: np.ndarray, downdate: float, columns: np.ndarray | None = None,
) -> np.ndarray:
    """Discriminant scores (n, K) of samples ``x`` with each one taken out of the statistics (module docstring).

    ``weights`` (F, K) = S^-1 mu_k and ``offsets`` (K,) = mu_k' S^-1 mu_k / 2 of
    the current solution, ``s_inv_x`` (F, n) = S^-1 x (or, with ``columns``, S^-1 of
    the distinct samples, sample i's in column ``columns[i]``), ``counts`` the examples
    per class (>= 2 for every label), ``downdate`` = (1 - shrinkage) / N for a
    covariance ``(1 - shrinkage) scatter / N + shrinkage * mu I``.

    Scored ``CHUNK`` samples at a time: each sample's score depends on it alone, and its float64 working
    arrays (n x F, three of them) would otherwise be ~8 MB per 256 pooled samples at F = 1280.
    """
    columns = np.arange(y.size) if columns is None else columns
    return np.concatenate([
        _leave_one_out_chunk(x[i: i + CHUNK], y[i: i + CHUNK], weights, offsets, s_inv_x[:, columns[i: i + CHUNK]],
                             means, counts, downdate)
        for i in range(0, y.size, CHUNK)
    ]) if y.size else np.zeros((0, weights.shape[1]), dtype=np.float64)


def _leave_one_out_chunk(
    x: np.ndarray, y: np.ndarray, weights: np.ndarray, offsets: np.ndarray, s_inv_x: np.ndarray,
    means: np.ndarray, counts: np.ndarray, downdate: float,
) -> np.ndarray:
    m = counts[y].astype(np.float64) - 1.0  # examples of the sample's class once it is left out
    rows = np.arange(y.size)
    d = x.astype(np.float64) - means[y]
    r = (s_inv_x.T - weights[:, y].T).astype(np.float64)  # S^-1 d
    q = np.einsum("nf,nf->n", d, r)  # d' S^-1 d
    x_r = np.einsum("nf,nf->n", x, r)  # x' S^-1 d
    r_mu = d @ weights  # (n, K): d' S^-1 mu_k
    # The class mean without the sample: mu_y - d / m. Scores under S first (the exact mean correction) ...
    scores = x @ weights - offsets
    scores = scores.astype(np.float64)
    scores[rows, y] -= q * (1.0 / m + 0.5 / (m * m))
    r_mu[rows, y] -= q / m
    # ... then S loses the sample's share of the within-class scatter, gamma d d' with gamma = downdate * (m + 1) / m:
    # S_loo^-1 = S^-1 + g r r' (Sherman-Morrison), which adds g ((x'r)(r'm_k) - (r'm_k)^2 / 2) to every score.
    gamma = downdate * (m + 1.0) / m
    g = gamma / np.maximum(1.0 - gamma * q, 1e-6)
    scores += g[:, None] * (x_r[:, None] * r_mu - 0.5 * r_mu * r_mu)
    return scores


def fit_blend(scores: np.ndarray, prior: np.ndarray, labels: np.ndarray, start: tuple[float, float]) -> tuple[float, float]:
    """(scale, gain) minimising the mean cross-entropy of ``scale * scores + gain * prior`` (both (n, K)).

    Newton's method with step halving on a convex function of two numbers;
    ``scale`` is kept positive (a negative weight on the discriminant would
    mean its evidence is backwards, which only a handful of samples can
    suggest). Starts from ``start``, returns it unchanged when nothing can be fitted.
    """
    if labels.size == 0 or scores.shape[1] < 2:
        return start
    v = np.stack([scores, prior], axis=-1).astype(np.float64)  # (n, K, 2)
    rows = np.arange(labels.size)
    floor = _MIN_SCALE_FRACTION * abs(start[0])
    theta = np.array([max(start[0], floor), start[1]], dtype=np.float64)

    def loss_grad_hess(t: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        z = v @ t
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        total = p.sum(axis=1, keepdims=True)
        p /= total
        loss = float(np.mean(np.log(total[:, 0]) - z[rows, labels]))
        mean_v = np.einsum("nk,nkj->nj", p, v)
        grad = np.mean(mean_v - v[rows, labels], axis=0)
        hess = np.einsum("nk,nki,nkj->ij", p, v, v) / labels.size - mean_v.T @ mean_v / labels.size
        return loss, grad, hess

    loss, grad, hess = loss_grad_hess(theta)
    for _ in range(_NEWTON_STEPS):
        step = np.linalg.solve(hess + _RIDGE * np.eye(2), grad)
        shrink = 1.0
        while shrink > 1e-4:
            trial = theta - shrink * step
            trial[0] = max(trial[0], floor)
            trial_loss, trial_grad, trial_hess = loss_grad_hess(trial)
            if math.isfinite(trial_loss) and trial_loss <= loss:
                break
            shrink *= 0.5
        else:
            break
        moved = float(np.max(np.abs(trial - theta) / np.maximum(np.abs(theta), 1e-12)))
        theta, loss, grad, hess = trial, trial_loss, trial_grad, trial_hess
        if moved < _NEWTON_TOL:
            break
    return float(theta[0]), float(theta[1])
