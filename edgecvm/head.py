"""The projection head in numpy: features → concept space, cosine logits, hand-written backward.

Forward, for a batch of features ``f`` and a matrix ``A`` of unit anchors:

    e = proj(f) + w_c · conse(f)        (see head_file.py for the ConSE branch)
    n = e / |e|                         direction in concept space
    logits = T · n Aᵀ                   cosine similarity × temperature
    loss = cross-entropy(logits, y)

Only ``proj`` is trained; the ConSE branch is frozen. Cosine logits with a
fixed anchor matrix are what make a new concept cost no new parameters: the
"output layer" is the anchor file. float32 throughout the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgecvm.conse import conse_embed
from edgecvm.head_file import HeadParams


@dataclass
class ForwardCache:
    features: np.ndarray
    hidden: np.ndarray | None  # MLP activations (after ReLU), None for a linear head
    unit: np.ndarray  # n
    norm: np.ndarray  # |e|, (B, 1)


class ProjectionHead:
    """Wraps ``HeadParams``; ``params`` are updated in place by an optimizer."""

    def __init__(self, spec: HeadParams) -> None:
        self.spec = spec
        self.params = spec.params
        self.temperature = spec.temperature

    def project(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        p = self.params
        if self.spec.kind == "mlp":
            hidden = np.maximum(features @ p["w1"] + p["b1"], 0.0)
            return hidden @ p["w"] + p["b"], hidden
        return features @ p["w"] + p["b"], None

    def embed(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Un-normalised concept-space embedding e(f) and the MLP hidden activations."""
        e, hidden = self.project(features)
        if self.spec.conse is not None and self.spec.conse.weight:
            e = e + self.spec.conse.weight * conse_embed(features, self.spec.conse)
        return e, hidden

    def directions(self, features: np.ndarray) -> np.ndarray:
        """Unit embeddings: what prediction compares with anchors."""
        e, _ = self.embed(features)
        return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)

    def loss_and_grads(
        self, features: np.ndarray, targets: np.ndarray, anchors: np.ndarray
    ) -> tuple[float, dict[str, np.ndarray]]:
        """Mean cross-entropy of cosine logits over ``anchors`` (K, D) for class indices ``targets``."""
        e, hidden = self.embed(features)
        norm = np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
        unit = e / norm
        logits = self.temperature * (unit @ anchors.T)
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        probs = exp / exp.sum(axis=1, keepdims=True)
        batch = np.arange(len(targets))
        loss = float(-np.log(np.maximum(probs[batch, targets], 1e-30)).mean())
        probs[batch, targets] -= 1.0
        d_logits = probs / len(targets)
        d_unit = self.temperature * (d_logits @ anchors)
        # Through n = e/|e|: the gradient loses its component along n, scaled by 1/|e|.
        d_e = (d_unit - unit * (d_unit * unit).sum(axis=1, keepdims=True)) / norm
        return loss, self._param_grads(ForwardCache(features, hidden, unit, norm), d_e)

    def _param_grads(self, cache: ForwardCache, d_e: np.ndarray) -> dict[str, np.ndarray]:
        p = self.params
        if self.spec.kind == "mlp":
            assert cache.hidden is not None
            d_hidden = (d_e @ p["w"].T) * (cache.hidden > 0)
            return {"w": cache.hidden.T @ d_e, "b": d_e.sum(axis=0),
                    "w1": cache.features.T @ d_hidden, "b1": d_hidden.sum(axis=0)}
        return {"w": cache.features.T @ d_e, "b": d_e.sum(axis=0)}
