"""Adam steps on dicts of numpy arrays, with checkpointable state.

The head learns on the device one frame (plus a replay minibatch) at a time, so
a step must cost well under a millisecond: every update is done in place with
one preallocated scratch buffer instead of allocating temporaries per step.
The optimizer's moments are part of the learner state (``state_arrays``), so a
resumed learner continues exactly where it stopped instead of restarting Adam's
bias correction with a cold start.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Protocol

import numpy as np

Arrays = Mapping[str, np.ndarray]


class Optimizer(Protocol):
    def step(self, params: dict[str, np.ndarray], grads: Arrays) -> None:
        """Update ``params`` in place from ``grads`` (same keys and shapes)."""
        ...

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Everything needed to resume (views, not copies)."""
        ...

    def load_state_arrays(self, arrays: Arrays) -> None:
        """Restore from ``state_arrays()`` output; ``ValueError`` if keys or shapes differ."""
        ...

    def nbytes(self) -> int:
        """Bytes held by the optimizer's state and scratch buffers."""
        ...


def _zeros_like_all(params: Arrays) -> dict[str, np.ndarray]:
    return {k: np.zeros_like(v) for k, v in params.items()}


def _scratch_for(params: Arrays) -> np.ndarray:
    """One flat buffer as large as the largest parameter, reused for every temporary."""
    largest = max((v.size for v in params.values()), default=0)
    dtype = next(iter(params.values())).dtype if params else np.float32
    return np.empty(largest, dtype=dtype)


def _load_into(target: dict[str, np.ndarray], arrays: Arrays, prefix: str) -> None:
    for key, arr in target.items():
        src = arrays.get(prefix + key)
        if src is None:
            raise ValueError(f"optimizer state lacks {prefix + key!r}")
        if src.shape != arr.shape or src.dtype != arr.dtype:
            raise ValueError(f"optimizer state {prefix + key!r} has shape/dtype {src.shape} {src.dtype}, "
                             f"expected {arr.shape} {arr.dtype}")
        if not np.isfinite(src).all():  # one NaN moment would turn every weight NaN at the next step
            raise ValueError(f"optimizer state {prefix + key!r} holds NaN/Inf")
        arr[...] = src


def _load_step(arrays: Arrays) -> int:
    t = arrays.get("t")  # 0-d when fresh, (1,) after a container round trip (ascontiguousarray)
    # Upper bound: the counter must still fit int64 after the steps to come (no device takes 2**62 steps).
    if t is None or t.size != 1 or t.dtype.kind not in "iu" or not 0 <= int(t.reshape(())) < 2**62:
        raise ValueError("optimizer state lacks a valid step counter 't'")
    return int(t.reshape(()))


class Adam:
    """Adam (Kingma & Ba 2015) with PyTorch's bias-correction formula, so torch and numpy runs agree."""

    def __init__(
        self, params: Arrays, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8
    ) -> None:
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.t = 0
        self.m = _zeros_like_all(params)
        self.v = _zeros_like_all(params)
        self._scratch = _scratch_for(params)

    def step(self, params: dict[str, np.ndarray], grads: Arrays) -> None:
        self.t += 1
        step_size = self.lr / (1.0 - self.beta1**self.t)
        sqrt_bc2 = math.sqrt(1.0 - self.beta2**self.t)
        for key, p in params.items():
            g, m, v = grads[key], self.m[key], self.v[key]
            tmp = self._scratch[: p.size].reshape(p.shape)
            # m = b1*m + (1-b1)*g ; v = b2*v + (1-b2)*g*g
            m *= self.beta1
            np.multiply(g, 1.0 - self.beta1, out=tmp)
            m += tmp
            v *= self.beta2
            np.multiply(g, g, out=tmp)
            tmp *= 1.0 - self.beta2
            v += tmp
            # p -= step_size * m / (sqrt(v)/sqrt_bc2 + eps)
            np.sqrt(v, out=tmp)
            tmp *= 1.0 / sqrt_bc2
            tmp += self.eps
            np.divide(m, tmp, out=tmp)
            tmp *= step_size
            p -= tmp

    def state_arrays(self) -> dict[str, np.ndarray]:
        arrays = {"t": np.array(self.t, dtype=np.int64)}
        arrays.update({f"m.{k}": v for k, v in self.m.items()})
        arrays.update({f"v.{k}": v for k, v in self.v.items()})
        return arrays

    def load_state_arrays(self, arrays: Arrays) -> None:
        t = _load_step(arrays)
        _load_into(self.m, arrays, "m.")
        _load_into(self.v, arrays, "v.")
        if any((v < 0).any() for v in self.v.values()):  # a second moment is a running mean of squares
            raise ValueError("optimizer state: Adam second moments must be >= 0")
        self.t = t

    def nbytes(self) -> int:
        return sum(a.nbytes for a in (*self.m.values(), *self.v.values(), self._scratch))
