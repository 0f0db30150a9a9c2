"""Adam and SGD with momentum over dicts of numpy arrays, with checkpointable state.

The optimizer state is plain arrays plus a step counter so the learner's
checkpoint can store and restore it exactly (a resumed run continues the same
trajectory instead of restarting Adam's bias correction).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Adam:
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    step_count: int = 0
    m: dict[str, np.ndarray] = field(default_factory=dict)
    v: dict[str, np.ndarray] = field(default_factory=dict)

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        self.step_count += 1
        c1 = 1.0 - self.beta1**self.step_count
        c2 = 1.0 - self.beta2**self.step_count
        for name, g in grads.items():
            m = self.m.setdefault(name, np.zeros_like(params[name]))
            v = self.v.setdefault(name, np.zeros_like(params[name]))
            m *= self.beta1
            m += (1.0 - self.beta1) * g
            v *= self.beta2
            v += (1.0 - self.beta2) * (g * g)
            params[name] -= (self.lr / c1) * m / (np.sqrt(v / c2) + self.eps)

    def state_arrays(self) -> dict[str, np.ndarray]:
        out = {f"m.{k}": a for k, a in self.m.items()}
        out.update({f"v.{k}": a for k, a in self.v.items()})
        out["step"] = np.array(self.step_count, dtype=np.int64)
        return out

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.step_count = int(arrays["step"])
        self.m = {k[2:]: a.astype(np.float32) for k, a in arrays.items() if k.startswith("m.")}
        self.v = {k[2:]: a.astype(np.float32) for k, a in arrays.items() if k.startswith("v.")}


@dataclass
class SGDMomentum:
    lr: float = 1e-2
    momentum: float = 0.9
    step_count: int = 0
    velocity: dict[str, np.ndarray] = field(default_factory=dict)

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        self.step_count += 1
        for name, g in grads.items():
            vel = self.velocity.setdefault(name, np.zeros_like(params[name]))
            vel *= self.momentum
            vel += g
            params[name] -= self.lr * vel

    def state_arrays(self) -> dict[str, np.ndarray]:
        out = {f"m.{k}": a for k, a in self.velocity.items()}
        out["step"] = np.array(self.step_count, dtype=np.int64)
        return out

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.step_count = int(arrays["step"])
        self.velocity = {k[2:]: a.astype(np.float32) for k, a in arrays.items() if k.startswith("m.")}


OPTIMIZERS = {"adam": Adam, "sgd": SGDMomentum}
