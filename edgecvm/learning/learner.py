"""The on-device learner: stream -> features -> head -> anchors -> decision -> replay.

A ``Learner`` owns one head method (how the projection head learns, see
head_methods.py), the anchor set (the fixed concept space), the set of
*known* concepts (those taught so far; it only grows), a latent replay buffer
and the counters the CLI reports. Frames come in either as images (through
an injected feature extractor, the ONNX backbone) or as ready-made features.

Teaching one example:
  1. the concept must exist in the anchor file (else a clear error with close names);
  2. features with NaN/Inf are refused: the step is skipped and counted;
  3. the head takes one step on the new sample(s) mixed with a replay minibatch,
     discriminating among the anchors of the known concepts (with a single
     known concept there is nothing to discriminate yet: the loss is 0 and
     the sample only fills the replay buffer for later steps);
  4. a non-finite loss or gradient also skips the step (weights unchanged);
  5. the sample joins the replay buffer and the concept joins the known set.

Predicting: the head embeds the frame, and the answer is the nearest anchor by
cosine similarity, among the known concepts or (``vocab="all"``) among every
concept in the anchor file: the zero-shot mode of a ConSE-initialised head.
With a head that can weigh its evidence (open_set.py, the ``lda`` head) and a
target true-positive rate (``unknown_tpr``), a frame judged none of the known
concepts is answered ``unknown`` among them, and over every concept by the
zero-shot branch among the concepts not taught (generalised zero-shot).
Persistence lives in state.py; this module never touches the disk.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from edgecvm.errors import BadInputError
from edgecvm.formats.anchors import AnchorSet
from edgecvm.formats.head_file import HeadParams
from edgecvm.learning.head_methods import DEFAULT_METHOD, HeadMethod, make_head_method
from edgecvm.learning.open_set import (
    DEFAULT_TARGET_TPR,
    UNKNOWN,
    Evidence,
    OpenSetHead,
    calibrate_threshold,
    known_score,
    validate_target_tpr,
)
from edgecvm.learning.replay import ReplayBuffer

if TYPE_CHECKING:  # images come in through the extractor; learning itself needs only numpy
    from PIL import Image

Vocab = Literal["known", "all"]
UNTAUGHT_ROWS = 64  # frames or replayed samples scored against every anchor at once (open set)


class FeatureExtractor(Protocol):
    """What the learner needs from the backbone runtime (runtime.FeatureExtractor)."""

    def extract(self, images: list[Image.Image]) -> np.ndarray:
        """(n, F) float32 features for n RGB images."""
        ...


@dataclass(frozen=True)
class LearnerConfig:
    method: str | None = None  # a name in head_methods.HEAD_METHODS; None: the saved state's, else default_method
    default_method: str = DEFAULT_METHOD  # the profile's head_method
    replay_bytes: int = 5_120_000  # 2,000 features of 1,280 dims in float16
    batch_size: int = 32  # replay samples mixed into every update
    seed: int = 0
    # open set: the share of frames of known concepts answered as known (open_set.py); None: always a known concept
    unknown_tpr: float | None = DEFAULT_TARGET_TPR

    def __post_init__(self) -> None:
        if self.unknown_tpr is not None:
            validate_target_tpr(self.unknown_tpr)


@dataclass
class Counters:
    updates: int = 0  # steps taken
    frames_seen: int = 0  # frames offered to observe, including skipped ones
    skipped_nonfinite: int = 0  # steps skipped for NaN/Inf in features, loss or gradient
    bad_frames: int = 0  # frames the I/O layer could not decode or use (count_bad_frame)
    per_concept: dict[str, int] = field(default_factory=dict)  # frames learned per concept


@dataclass(frozen=True)
class UpdateResult:
    loss: float  # NaN when skipped
    skipped: bool
    new_concepts: tuple[str, ...]  # concepts that joined the known set with this update
    updates: int  # counter after this call


@dataclass(frozen=True)
class Prediction:
    concept: str  # "unknown" when ``unknown``
    score: float  # cosine similarity in [-1, 1] between the frame's embedding and the concept's anchor
    top_k: list[tuple[str, float]]  # best first; the nearest known concepts when ``unknown``
    unknown: bool = False  # judged none of the known concepts (vocabulary "known")
    # open-set score minus the calibrated threshold: < 0 is none of the known concepts; None: not decided (open-set
    # answers off, a head method without them, or not calibrated yet)
    known_margin: float | None = None


class Learner:
    def __init__(
        self,
        head: HeadParams,
        anchors: AnchorSet,
        config: LearnerConfig | None = None,
        extractor: FeatureExtractor | None = None,
        method: HeadMethod | None = None,
    ) -> None:
        """``method``: a head method the caller built (an evaluation variant); default: the config's, by name."""
        self.config = config if config is not None else LearnerConfig()
        if anchors.dim != head.concept_dim:
            raise BadInputError(
                f"anchor dimension {anchors.dim} does not match the head's concept dimension {head.concept_dim}; "
                "use the anchor file of the bundle"
            )
        self.feature_dim = head.feature_dim
        self.anchors = anchors
        self.extractor = extractor
        self.replay = ReplayBuffer.from_bytes(self.config.replay_bytes, head.feature_dim, self.config.seed)
        self.method: HeadMethod = method or make_head_method(self.config.method or self.config.default_method, head,
                                                             self.replay.capacity)
        self.counters = Counters()
        self.rng = np.random.default_rng(self.config.seed)
        self.known: list[str] = []  # in teaching order; row i of known_anchors
        self.known_anchors = np.zeros((0, anchors.dim), dtype=np.float32)
        self._known_rows: dict[int, int] = {}  # anchor index -> row in known_anchors
        self._threshold: tuple[object, int, float | None] | None = None  # (calibration, known count, threshold)

    # ---- teaching -------------------------------------------------------------------------------

    def observe(self, image: Image.Image, concept: str) -> UpdateResult:
        """Teach one frame: ``image`` shows ``concept``."""
        return self.observe_features(self._extract(image), [concept])

    def observe_features(self, features: np.ndarray, concepts: Sequence[str]) -> UpdateResult:
        """Teach n frames given as backbone features (n, F) labelled with ``concepts``."""
        features = self._as_features(features)
        if len(concepts) != features.shape[0]:
            raise BadInputError(f"{features.shape[0]} feature rows but {len(concepts)} concept labels")
        anchor_idx = [self.anchors.index_of(c) for c in concepts]  # unknown concept -> error with close names
        self.counters.frames_seen += features.shape[0]
        if not np.isfinite(features).all():
            return self._skip()

        rows, known_anchors = self._known_rows, self.known_anchors
        new_idx = list(dict.fromkeys(a for a in anchor_idx if a not in rows))
        if new_idx:  # tentative: committed only if the step succeeds
            rows = {**rows, **{a: len(self.known) + j for j, a in enumerate(new_idx)}}
            known_anchors = np.concatenate([known_anchors, self.anchors.rows(new_idx)])
        targets = np.array([rows[a] for a in anchor_idx], dtype=np.int64)

        replay = self.replay.sample(self.config.batch_size, self.rng)
        loss = self.method.update(features, targets, known_anchors, replay)
        if not math.isfinite(loss):
            return self._skip()

        self.replay.add(features, targets)
        self._known_rows, self.known_anchors = rows, known_anchors
        new_names = tuple(self.anchors.names[a] for a in new_idx)
        self.known.extend(new_names)
        self.counters.updates += 1
        for a in anchor_idx:
            name = self.anchors.names[a]
            self.counters.per_concept[name] = self.counters.per_concept.get(name, 0) + 1
        return UpdateResult(loss=loss, skipped=False, new_concepts=new_names, updates=self.counters.updates)

    def _skip(self) -> UpdateResult:
        self.counters.skipped_nonfinite += 1
        return UpdateResult(loss=math.nan, skipped=True, new_concepts=(), updates=self.counters.updates)

    def count_bad_frame(self) -> None:
        """Called by the I/O layer for each frame it had to drop (corrupt JPEG, wrong size, ...)."""
        self.counters.bad_frames += 1

    def restore_known(self, names: Sequence[str]) -> None:
        """Set the known concepts, in teaching order (used when resuming a saved state)."""
        idx = [self.anchors.index_of(n) for n in names]
        self.known = [self.anchors.names[i] for i in idx]
        self.known_anchors = self.anchors.rows(idx)
        self._known_rows = {a: row for row, a in enumerate(idx)}

    # ---- predicting -----------------------------------------------------------------------------

    def predict(self, image: Image.Image, top_k: int = 5, vocab: Vocab = "known") -> Prediction:
        return self.predict_features(self._extract(image), top_k=top_k, vocab=vocab)[0]

    def predict_features(self, features: np.ndarray, top_k: int = 5, vocab: Vocab = "known") -> list[Prediction]:
        """Nearest anchors by cosine similarity for each feature row, best first (open set: module docstring)."""
        features = self._as_features(features)
        bad = np.flatnonzero(~np.isfinite(features).all(axis=1))
        if bad.size:
            raise BadInputError(f"feature rows {bad.tolist()} contain NaN/Inf; drop those frames before predicting")
        if vocab not in ("known", "all"):
            raise BadInputError(f"unknown vocabulary {vocab!r}; choose 'known' or 'all'")
        decided = self._open_set(features)
        if decided is None:
            names, sims = self._similarities(self.method.embed(features), vocab)
            return [Prediction(r[0][0], r[0][1], r) for r in _ranked(sims, names, top_k)]
        margins, zero_shot = decided
        known_names, known_sims = self._similarities(self.method.embed(features, conse=zero_shot), "known")
        known = _ranked(known_sims, known_names, top_k)
        if vocab == "known":
            return [Prediction(UNKNOWN if m < 0 else r[0][0], r[0][1], r, unknown=m < 0, known_margin=m)
                    for r, m in zip(known, margins.tolist(), strict=True)]
        # over every concept: a frame judged none of the known ones is named by the zero-shot branch among the others
        rejected = np.flatnonzero(margins < 0)
        if rejected.size:
            untaught = self._untaught_similarities(_unit(zero_shot[rejected]))
            k = min(top_k, len(self.anchors) - len(self.known))
            for row, ranked in zip(rejected.tolist(), _ranked(untaught, self.anchors.names, k), strict=True):
                known[row] = ranked
        return [Prediction(r[0][0], r[0][1], r, known_margin=m) for r, m in zip(known, margins.tolist(), strict=True)]

    def _open_set(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(open-set score minus threshold, ConSE embedding) per frame; None when nothing decides (see
        ``Prediction.known_margin``)."""
        threshold = self.open_set_threshold()
        if threshold is None:
            return None
        evidence = self.method.evidence(features)  # type: ignore[attr-defined]  # an OpenSetHead: open_set_threshold checked
        if evidence is None:
            return None
        return known_score(evidence, self._best_untaught(evidence)) - threshold, evidence.zero_shot

    def open_set_threshold(self) -> float | None:
        """The calibrated open-set threshold for the known concepts now; None when open-set answers are off, the
        head method has none, nothing is known, every concept is, or the head has not calibrated yet."""
        if self.config.unknown_tpr is None or not self.known or not isinstance(self.method, OpenSetHead):
            return None
        calibration = self.method.calibration_evidence()
        if calibration is None or len(self.known) == len(self.anchors):
            return None
        if self._threshold is None or self._threshold[0] is not calibration or self._threshold[1] != len(self.known):
            scores = known_score(calibration, self._best_untaught(calibration))
            self._threshold = (calibration, len(self.known), calibrate_threshold(scores, self.config.unknown_tpr))
        return self._threshold[2]

    def _untaught_similarities(self, embeddings: np.ndarray, scale: float = 1.0) -> np.ndarray:
        """(n, N) ``scale`` x the cosines with every anchor, -inf at the taught concepts (scored as the anchors are
        held: an int8 file is never expanded to float32)."""
        sims = self.anchors.similarities(embeddings)
        sims *= scale
        sims[:, list(self._known_rows)] = -np.inf
        return sims

    def _best_untaught(self, evidence: Evidence) -> np.ndarray:
        """(n,) ``max_u gain * conse(f) . a_u``, the best untaught concept's zero-shot logit, UNTAUGHT_ROWS rows at a
        time, so a replay buffer scored against 21,843 anchors needs no (n, 21,843) matrix."""
        rows = evidence.zero_shot
        return np.concatenate([self._untaught_similarities(rows[start : start + UNTAUGHT_ROWS], evidence.gain).max(1)
                               for start in range(0, len(rows), UNTAUGHT_ROWS)] or [np.zeros(0, np.float32)])

    def _similarities(self, embeddings: np.ndarray, vocab: Vocab) -> tuple[Sequence[str], np.ndarray]:
        """The vocabulary's names and each embedding's cosine with each of them."""
        if vocab == "all":
            return self.anchors.names, self.anchors.similarities(embeddings)
        if not self.known:
            raise BadInputError(
                "no concepts have been taught yet, so the vocabulary of taught concepts ('known') is empty; "
                "teach some, or answer over the whole anchor file (vocabulary 'all', zero-shot)"
            )
        return self.known, embeddings @ self.known_anchors.T

    # ---- input checks ---------------------------------------------------------------------------

    def _as_features(self, features: np.ndarray) -> np.ndarray:
        """float32 (n, F), without copying when it already is."""
        features = np.asarray(features, dtype=np.float32)
        if features.ndim == 1:
            features = features[None, :]
        if features.ndim != 2 or features.shape[1] != self.feature_dim:
            raise BadInputError(
                f"features of shape {features.shape} do not match the head's input (n, {self.feature_dim}); "
                "was the state made with a different bundle?"
            )
        return features

    def _extract(self, image: Image.Image) -> np.ndarray:
        if self.extractor is None:
            raise BadInputError("this learner has no feature extractor; build it with extractor=FeatureExtractor(...)")
        return self.extractor.extract([image])


def _ranked(sims: np.ndarray, names: Sequence[str], top_k: int) -> list[list[tuple[str, float]]]:
    """Per row of similarities (n, V), the ``top_k`` best (name, similarity), best first."""
    k = max(1, min(top_k, len(names)))
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    top_sims = np.take_along_axis(sims, top, axis=1)
    order = np.argsort(-top_sims, axis=1, kind="stable")
    top, top_sims = np.take_along_axis(top, order, axis=1), np.take_along_axis(top_sims, order, axis=1)
    return [[(names[i], float(s)) for i, s in zip(idx_row, sim_row, strict=True)]
            for idx_row, sim_row in zip(top, top_sims, strict=True)]


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
