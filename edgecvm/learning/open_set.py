"""The open-set decision: is a frame one of the taught concepts, and if not, which concept of the vocabulary.

Why: a device taught *mug*, *keys* and *cat* that names one of them for a dog
cannot start the "that's new, what is it?" loop, and once it has learned it
stops naming what it never saw, though its ConSE branch still could. So the
decision weighs the head's evidence for the best taught concept against the
zero-shot evidence for the best concept *not* taught (calibrated stacking,
Chao et al. 2016, "An empirical study and analysis of generalized zero-shot
learning"):

    known(f) = logsumexp_k z_k(f) - ZERO_SHOT_WEIGHT * gain * max_u conse(f) . a_u

``z_k`` are the head's logits over the K taught concepts (for the ``lda``
head the blend ``scale * lda_k(f) + gain * conse(f) . a_k``), ``a_u`` the
anchors of the vocabulary's untaught concepts and ``gain`` the head's ConSE
weight. The blend fits ``gain`` to tell the taught concepts apart, where the
zero-shot evidence matters little; telling taught from untaught it matters
about five times more (``ZERO_SHOT_WEIGHT``, measured on the dev split over
a 10-task class-incremental run, tools/open_set_weights.py: 4 to 6 rank
taught against untaught best and keep the most zero-shot answers after every
task; from 8 on, fewer untaught frames are rejected while few concepts are
taught; a temperature on the log-sum-exp, 0.5 or 2, did no better). Chosen
by measurement among max posterior, energy, max logit, Mahalanobis to the
nearest class, relative Mahalanobis, k-NN to the replay buffer, ConSE
agreement and their sums (docs/results.md, "Open set").

A frame is a taught concept when ``known(f) >= threshold``; otherwise it is
``unknown`` among the taught concepts, and over the whole vocabulary
(generalised zero-shot) it is the untaught concept the ConSE branch puts
first. The threshold is the ``1 - target_tpr`` quantile of the scores of the
head's replayed samples of the taught concepts, each scored as if it had been
left out of the statistics (blend_calibration.py): the score a new frame of a
taught concept gets, so that fraction of them is accepted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from edgecvm.errors import BadInputError

DEFAULT_TARGET_TPR = 0.95  # of frames of taught concepts answered as taught (the rest: unknown)
UNKNOWN = "unknown"  # the concept answered for a frame judged none of the taught ones (vocabulary "known")
ZERO_SHOT_WEIGHT = 5.0  # of the untaught concepts' ConSE logits against the head's (module docstring)
_MIN_CALIBRATION = 20  # replayed samples below which no threshold is set: a 5 % quantile of fewer says little


@dataclass(frozen=True)
class Evidence:
    """What the decision needs about n frames (or n replayed samples, scored leave-one-out)."""

    known_logits: np.ndarray  # (n, K) the head's logits over the taught concepts, in teaching order
    zero_shot: np.ndarray  # (n, D) the ConSE embedding of each frame
    gain: float  # the head's weight on the ConSE branch

    def state_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}logits": self.known_logits, f"{prefix}conse": self.zero_shot,
                f"{prefix}gain": np.array([self.gain])}


def load_evidence(arrays: Mapping[str, np.ndarray], prefix: str, concept_dim: int) -> Evidence | None:
    """Inverse of ``Evidence.state_arrays``; None when the arrays hold none (a state saved before any calibration)."""
    logits, conse, gain = (arrays.get(f"{prefix}{k}") for k in ("logits", "conse", "gain"))
    if logits is None and conse is None and gain is None:
        return None
    if (logits is None or conse is None or gain is None or logits.ndim != 2
            or conse.shape != (logits.shape[0], concept_dim) or gain.shape != (1,)):
        raise ValueError("open-set calibration arrays are missing or have the wrong shapes")
    if not all(np.isfinite(a).all() for a in (logits, conse, gain)):
        raise ValueError("open-set calibration arrays hold NaN/Inf")
    return Evidence(logits.astype(np.float32), conse.astype(np.float32), float(gain[0]))


@runtime_checkable
class OpenSetHead(Protocol):
    """A head method that can weigh its evidence against the zero-shot branch (the ``lda`` head)."""

    def evidence(self, features: np.ndarray) -> Evidence | None:
        """Evidence for these frames; None before the head has solved for any taught concept."""
        ...

    def calibration_evidence(self) -> Evidence | None:
        """Evidence for the replayed samples of the last blend fit, each scored leave-one-out, or None."""
        ...


def validate_target_tpr(target_tpr: float) -> float:
    if not 0.0 < target_tpr < 1.0:
        raise BadInputError(f"the target true-positive rate for taught concepts must be between 0 and 1 (exclusive), "
                            f"got {target_tpr}; 0.95 accepts 95 % of frames of taught concepts")
    return float(target_tpr)


def known_score(evidence: Evidence, best_untaught: np.ndarray) -> np.ndarray:
    """(n,) ``known(f)`` of the module docstring: how much more the head believes a taught concept than the
    zero-shot branch believes an untaught one. ``best_untaught``: (n,) ``max_u gain * conse(f) . a_u``."""
    z = evidence.known_logits.astype(np.float64)
    top = z.max(axis=1)
    score = top + np.log(np.exp(z - top[:, None]).sum(axis=1))
    return score - ZERO_SHOT_WEIGHT * best_untaught


def calibrate_threshold(scores: np.ndarray, target_tpr: float) -> float | None:
    """The score that ``target_tpr`` of the (known) calibration ``scores`` reach; None with too few to say."""
    finite = scores[np.isfinite(scores)]
    if finite.size < _MIN_CALIBRATION:
        return None
    return float(np.quantile(finite, 1.0 - target_tpr, method="lower"))
