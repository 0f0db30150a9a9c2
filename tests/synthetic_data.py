"""Small synthetic heads, anchor sets and clustered features for learner-core tests.

Real backbone features need the exported bundle (another module's job); these
stand-ins keep unit tests fast while having the structure that matters: each
class is a cluster of non-negative (post-ReLU-like) feature vectors.
"""

from __future__ import annotations

import numpy as np

from edgecvm.formats.anchors import AnchorSet, normalise_rows
from edgecvm.formats.head_file import ConseBranch, HeadParams

CONCEPTS = ("cat", "dog", "coffee mug", "sock", "teapot", "bicycle", "goldfish", "lemon", "bus", "umbrella",
            "banana", "candle")


def anchor_set(dim: int = 16, names: tuple[str, ...] = CONCEPTS, seed: int = 0) -> AnchorSet:
    rng = np.random.default_rng(seed)
    return AnchorSet(names, normalise_rows(rng.normal(size=(len(names), dim))), "test-model", ("{}",), "float16")


def conse_branch(feature_dim: int, concept_dim: int, n_classes: int = 20, seed: int = 1) -> ConseBranch:
    rng = np.random.default_rng(seed)
    return ConseBranch(
        fc_w=rng.normal(0, 0.5, size=(feature_dim, n_classes)).astype(np.float32),
        fc_b=rng.normal(0, 0.1, size=n_classes).astype(np.float32),
        anchors=normalise_rows(rng.normal(size=(n_classes, concept_dim))),
        top_t=5,
    )


def head_params(
    kind: str = "linear",
    feature_dim: int = 32,
    concept_dim: int = 16,
    hidden_dim: int = 24,
    conse: bool = False,
    zero_proj: bool = False,
    seed: int = 0,
) -> HeadParams:
    """A head like the export writes: small random ``proj`` (or zeros) and optionally a ConSE branch."""
    rng = np.random.default_rng(seed)

    def init(rows: int, cols: int) -> np.ndarray:
        if zero_proj:
            return np.zeros((rows, cols), np.float32)
        return rng.normal(0, 1 / np.sqrt(rows), size=(rows, cols)).astype(np.float32)

    if kind == "linear":
        params = {"w": init(feature_dim, concept_dim), "b": np.zeros(concept_dim, np.float32)}
        hidden_dim = 0
    else:
        params = {"w1": init(feature_dim, hidden_dim), "b1": np.full(hidden_dim, 0.1, np.float32),
                  "w": init(hidden_dim, concept_dim), "b": np.zeros(concept_dim, np.float32)}
    return HeadParams(kind=kind, feature_dim=feature_dim, concept_dim=concept_dim, params=params,  # type: ignore[arg-type]
                      temperature=16.0, hidden_dim=hidden_dim,
                      conse=conse_branch(feature_dim, concept_dim) if conse else None)


class Clusters:
    """Class ``c`` draws non-negative features around its own random centre."""

    def __init__(self, n_classes: int, feature_dim: int = 32, spread: float = 0.6, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.centres = self.rng.gamma(1.0, 1.0, size=(n_classes, feature_dim)).astype(np.float32)
        self.spread = spread

    def draw(self, labels: np.ndarray) -> np.ndarray:
        noise = self.rng.normal(0, self.spread, size=(len(labels), self.centres.shape[1]))
        return np.maximum(self.centres[labels] + noise, 0).astype(np.float32)
