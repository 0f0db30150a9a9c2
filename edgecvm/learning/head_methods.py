"""How the head learns, behind one small interface, looked up by name.

The learner loop (learner.py) does not know how the head is trained: it hands a
``HeadMethod`` the new samples, the anchors of the known concepts and a replay
minibatch, and asks it for embeddings. A closed-form discriminant over running
class statistics ("lda", the default, analytic_head.py) and gradient descent
on the cosine cross-entropy ("sgd") are the two the product offers, selectable
by name in the learner, the state file, the profiles and the evaluation
harness alike, so the device and the benchmark always run the same update.
Research variants that the evaluation still compares live with it
(eval/variants.py), not here: a device never offers or resumes them.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping
from typing import Protocol

import numpy as np

from edgecvm.errors import BadInputError
from edgecvm.formats.head_file import HeadParams
from edgecvm.learning.analytic_head import AnalyticHead, calibration_pool_size
from edgecvm.learning.optim import Adam, Optimizer
from edgecvm.learning.projection_head import ProjectionHead
from edgecvm.learning.replay import ReplayBatch, SampleCache

_SQRT_F32_MAX = math.sqrt(float(np.finfo(np.float32).max))  # ~1.8e19: larger values overflow when squared


class HeadMethod(Protocol):
    """A trainable map from backbone features to unit vectors in concept space."""

    name: str

    def embed(self, features: np.ndarray, conse: np.ndarray | None = None) -> np.ndarray:
        """(n, F) float32 features -> (n, D) float32 unit rows; ``conse``: their ConSE embedding with the head's
        branch (conse.conse_embed), when the caller has it already (the open-set decision computes it)."""
        ...

    def update(
        self, features: np.ndarray, targets: np.ndarray, known_anchors: np.ndarray, replay: ReplayBatch | None
    ) -> float:
        """One learning step on new samples plus an optional replay minibatch.

        ``features`` (n, F) float32 are finite; ``targets`` (n,) and
        ``replay.labels`` index rows of ``known_anchors`` (K, D unit rows).
        Returns the loss. A non-finite return means the step was skipped and
        the method's state is exactly as before the call.
        """
        ...

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Everything needed to resume (parameters, optimizer moments, statistics)."""
        ...

    def load_state_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Inverse of ``state_arrays``; ``ValueError`` on missing keys or wrong shapes."""
        ...

    def nbytes(self, replay_capacity: int = 0) -> int:
        """Bytes of every array the method holds (with a replay buffer of that capacity), for the memory plan."""
        ...


def all_finite(arrays: Mapping[str, np.ndarray]) -> bool:
    """True when every value is finite *and* its square is: no NaN/Inf now or in Adam's second moment.

    A finite but huge gradient (a corrupt 1e38 feature) would overflow ``g * g``
    to Inf in the optimizer: those weights would never move again and the
    checkpoint would hold Inf. max/min are one cheap pass each, and NaN fails
    both comparisons.
    """
    return all(float(a.max()) < _SQRT_F32_MAX and float(a.min()) > -_SQRT_F32_MAX for a in arrays.values() if a.size)


class GradientHead:
    """Cross-entropy over cosine logits to the known anchors, minimised by an optimizer step per update.

    The frozen ConSE part of each replayed feature is cached: computing it is a
    (batch x 1280) @ (1280 x 1000) product, the largest single cost of an update.
    """

    def __init__(self, name: str, head: HeadParams, make_optimizer: Callable[[dict[str, np.ndarray]], Optimizer]):
        self.name = name
        self.head = ProjectionHead(head)
        self.optimizer = make_optimizer(self.head.params)
        self.replay_cache = SampleCache(head.concept_dim)
        self._grads = {k: np.zeros_like(v) for k, v in self.head.params.items()}

    def embed(self, features: np.ndarray, conse: np.ndarray | None = None) -> np.ndarray:
        return self.head.embed_unit(features, conse)

    def update(
        self, features: np.ndarray, targets: np.ndarray, known_anchors: np.ndarray, replay: ReplayBatch | None
    ) -> float:
        frozen = self.head.frozen_part(features)
        if replay is not None:
            if frozen is not None:
                frozen = np.concatenate([frozen, self.replay_cache.lookup(replay, self.head.frozen_part)])
            features = np.concatenate([features, replay.features], dtype=np.float32)
            targets = np.concatenate([targets, replay.labels])
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is detected below and skipped
            loss, grads = self.head.loss_and_grads(features, targets, known_anchors, frozen, out=self._grads)
        if not (math.isfinite(loss) and all_finite(grads)):
            return math.nan
        self.optimizer.step(self.head.params, grads)
        return loss

    def state_arrays(self) -> dict[str, np.ndarray]:
        arrays = {f"param.{k}": v for k, v in self.head.params.items()}
        arrays.update({f"opt.{k}": v for k, v in self.optimizer.state_arrays().items()})
        return arrays

    def load_state_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        params = self.head.params
        for key, value in params.items():
            src = arrays.get(f"param.{key}")
            if src is None or src.shape != value.shape or src.dtype != value.dtype:
                got = None if src is None else f"{src.shape} {src.dtype}"
                raise ValueError(f"head parameter {key!r}: saved shape/dtype {got}, expected {value.shape} {value.dtype}")
            if not np.isfinite(src).all():
                raise ValueError(f"head parameter {key!r} holds NaN/Inf")
        self.optimizer.load_state_arrays({k[4:]: v for k, v in arrays.items() if k.startswith("opt.")})
        for key, value in params.items():
            value[...] = arrays[f"param.{key}"]
        self.replay_cache.clear()

    def nbytes(self, replay_capacity: int = 0) -> int:
        gradients = sum(v.nbytes for v in self._grads.values())
        cache = SampleCache.nbytes_for(replay_capacity, self.replay_cache.dim) if self.head.has_frozen_part else 0
        return self.head.nbytes() + self.optimizer.nbytes() + gradients + cache


def _lda_head(head: HeadParams, replay_capacity: int) -> HeadMethod:
    return AnalyticHead("lda", head, calibration_pool=calibration_pool_size(replay_capacity))


def _adam_head(head: HeadParams, replay_capacity: int) -> HeadMethod:
    return GradientHead("sgd", head, lambda params: Adam(params, lr=1e-3))


# name -> factory(head params from the bundle, the learner's replay capacity) -> a fresh method. "lda" is the default: the best measured
# (docs/results.md); "sgd" is the lighter one for profiles whose budget cannot hold its statistics.
HEAD_METHODS: dict[str, Callable[[HeadParams, int], HeadMethod]] = {
    "lda": _lda_head,  # closed form from streaming class statistics, Ledoit-Wolf shrinkage, fitted ConSE blend
    "sgd": _adam_head,  # gradient descent with Adam, lr 1e-3, temperature from the head file
}
DEFAULT_METHOD = "lda"


def make_head_method(name: str, head: HeadParams, replay_capacity: int = 0) -> HeadMethod:
    """Build the method called ``name`` for a learner with a replay buffer of ``replay_capacity`` features;
    unknown names fail with the closest ones."""
    factory = HEAD_METHODS.get(name)
    if factory is None:
        close = difflib.get_close_matches(name, list(HEAD_METHODS), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise BadInputError(f"unknown head method {name!r}; {hint}available: {', '.join(HEAD_METHODS)}")
    return factory(head, replay_capacity)
