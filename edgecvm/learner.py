"""The on-device learner: teach concepts from features, predict the nearest anchor.

Read top to bottom, one update is: features of the new frame(s) → check they
are finite → look the concept up in the anchor file (the known set grows) →
mix with a replay minibatch → cosine-softmax loss over the *known* anchors →
hand-written gradient → optimizer step, kept only if everything stayed
finite → the new features enter the replay buffer. Prediction compares the
head's direction with the anchors of the known concepts, or of the whole
anchor vocabulary (``vocab="all"``: zero-shot with a ConSE head).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
from PIL import Image

from edgecvm.anchors import AnchorSet
from edgecvm.errors import BadInputError
from edgecvm.head import ProjectionHead
from edgecvm.head_file import HeadParams
from edgecvm.optim import Adam
from edgecvm.replay import ReplayBuffer

Vocab = Literal["known", "all"]


class Extractor(Protocol):
    def extract(self, images: list[Image.Image]) -> np.ndarray: ...


@dataclass(frozen=True)
class LearnerConfig:
    lr: float = 1e-3  # Adam; 1e-3 is stable for cosine logits at temperature 16
    batch_size: int = 32  # replay samples mixed into every update
    replay_bytes: int = 5_120_000  # 2,000 features of 1,280 float16
    seed: int = 0


@dataclass
class Counters:
    updates: int = 0
    frames_seen: int = 0
    skipped_nonfinite: int = 0
    bad_frames: int = 0
    per_concept: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Prediction:
    concept: str
    score: float  # cosine similarity with the concept's anchor
    top_k: list[tuple[str, float]]


@dataclass(frozen=True)
class UpdateResult:
    loss: float | None  # None when the step was skipped
    skipped: bool


class Learner:
    def __init__(self, head: HeadParams, anchors: AnchorSet, config: LearnerConfig,
                 extractor: Extractor | None = None) -> None:
        if head.concept_dim != anchors.dim:
            raise BadInputError(f"head maps to {head.concept_dim}-d but the anchor file is {anchors.dim}-d; "
                                "export the bundle with these anchors")
        self.head = ProjectionHead(head)
        self.anchors = anchors
        self.config = config
        self.extractor = extractor
        self.optimizer = Adam(lr=config.lr)
        self.replay = ReplayBuffer(head.feature_dim, config.replay_bytes)
        self.rng = np.random.default_rng(config.seed)
        self.known: list[int] = []  # anchor indices, in the order they were taught
        self.counters = Counters()

    # -- teaching -------------------------------------------------------------
    @property
    def known_concepts(self) -> list[str]:
        return [self.anchors.names[i] for i in self.known]

    def _known_slot(self, anchor_idx: int) -> int:
        if anchor_idx not in self.known:
            self.known.append(anchor_idx)
        return self.known.index(anchor_idx)

    def observe_features(self, features: np.ndarray, concepts: Sequence[str]) -> UpdateResult:
        """One update from new features (n, F) labelled ``concepts``, mixed with replay."""
        features = np.asarray(features, dtype=np.float32).reshape(len(concepts), -1)
        anchor_idx = self.anchors.indices_of(concepts)  # unknown concept -> error before any change
        self.counters.frames_seen += len(concepts)
        if not np.isfinite(features).all():
            self.counters.skipped_nonfinite += 1
            return UpdateResult(None, True)
        slots = np.array([self._known_slot(int(i)) for i in anchor_idx], dtype=np.int64)
        replay_x, replay_y = self.replay.sample(self.config.batch_size, self.rng)
        batch_x = np.concatenate([features, replay_x]) if len(replay_x) else features
        batch_y = np.concatenate([slots, [self.known.index(int(a)) for a in replay_y]]).astype(np.int64)
        known_anchors = self.anchors.vectors[self.known]
        loss, grads = self.head.loss_and_grads(batch_x, batch_y, known_anchors)
        if not (np.isfinite(loss) and all(np.isfinite(g).all() for g in grads.values())):
            self.counters.skipped_nonfinite += 1
            return UpdateResult(None, True)
        self.optimizer.step(self.head.params, grads)
        for f, a in zip(features, anchor_idx, strict=True):
            self.replay.add(f, int(a), self.rng)
        for name in concepts:
            canonical = self.anchors.names[self.anchors.index_of(name)]
            self.counters.per_concept[canonical] = self.counters.per_concept.get(canonical, 0) + 1
        self.counters.updates += 1
        return UpdateResult(loss, False)

    def observe(self, image: Image.Image, concept: str) -> UpdateResult:
        return self.observe_features(self._extract([image]), [concept])

    # -- predicting -----------------------------------------------------------
    def vocabulary(self, vocab: Vocab) -> np.ndarray:
        if vocab == "all":
            return np.arange(len(self.anchors))
        if not self.known:
            raise BadInputError("no concepts taught yet: teach some with `edgecvm learn`, or predict over the "
                                "whole anchor vocabulary with --vocab all (zero-shot)")
        return np.array(self.known, dtype=np.int64)

    def predict_features(self, features: np.ndarray, top_k: int = 5, vocab: Vocab = "known") -> list[Prediction]:
        candidates = self.vocabulary(vocab)
        features = np.asarray(features, dtype=np.float32)
        sims = self.head.directions(features) @ self.anchors.vectors[candidates].T
        k = min(top_k, len(candidates))
        order = np.argsort(-sims, axis=1)[:, :k]
        out = []
        for row, idx in zip(sims, order, strict=True):
            ranked = [(self.anchors.names[candidates[j]], float(row[j])) for j in idx]
            out.append(Prediction(ranked[0][0], ranked[0][1], ranked))
        return out

    def predict(self, image: Image.Image, top_k: int = 5, vocab: Vocab = "known") -> Prediction:
        return self.predict_features(self._extract([image]), top_k, vocab)[0]

    def _extract(self, images: list[Image.Image]) -> np.ndarray:
        if self.extractor is None:
            raise BadInputError("this learner has no feature extractor; create it with a bundle runtime")
        return self.extractor.extract(images)
