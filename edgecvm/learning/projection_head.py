"""The numpy projection head: features -> concept space, cosine logits, cross-entropy, backward.

Forward, for a batch of backbone features ``f`` (n, F) and the anchors ``A``
(K, D, unit rows) of the concepts being discriminated:

    z = f @ w + b                      (linear)  or  relu(f @ w1 + b1) @ w + b  (mlp)
    e = z + conse_weight * conse(f)    (the frozen ConSE branch, see head_file.py)
    u = e / |e|                        (a point on the unit sphere, like the anchors)
    s = T * u @ A.T                    (cosine similarities scaled by the temperature T)
    loss = mean cross-entropy(softmax(s), target)

The backward pass is written out by hand (no autograd on the device). The
only non-obvious step is the normalisation: with r = sqrt(|e|^2 + eps^2),
du/de = (I - u u^T) / r, so de = (du - u * <du, u>) / r. The ConSE branch is
frozen: it shifts e but receives no gradient. Everything runs in the head's
dtype (float32 on the device; float64 in the gradient-check tests).
"""

from __future__ import annotations

import numpy as np

from edgecvm.formats.head_file import HeadParams
from edgecvm.learning.conse import conse_embed

_NORM_EPS_SQ = 1e-12  # keeps u finite when e == 0 (a conse-less head with proj = 0)


class ProjectionHead:
    """Trainable ``proj`` plus the frozen ConSE branch of a ``HeadParams``.

    The parameters are copied (into ``dtype``) so training never mutates the
    ``HeadParams`` loaded from the bundle.
    """

    def __init__(self, head: HeadParams, dtype: type[np.floating] = np.float32) -> None:
        self.kind = head.kind
        self.temperature = float(head.temperature)
        self.conse = head.conse
        self.dtype = np.dtype(dtype)
        self.params: dict[str, np.ndarray] = {k: np.array(v, dtype=self.dtype) for k, v in head.params.items()}

    @property
    def has_frozen_part(self) -> bool:
        return self.conse is not None and self.conse.weight != 0.0

    def frozen_part(self, features: np.ndarray, conse: np.ndarray | None = None) -> np.ndarray | None:
        """``conse_weight * conse(f)`` (n, D), or None without a ConSE branch. Constant for a given ``f``.

        ``conse``: ``conse_embed(features, ...)`` with this head's branch, when the caller has it already."""
        if not self.has_frozen_part:
            return None
        part = conse_embed(features, self.conse) if conse is None else np.array(conse, dtype=np.float32)
        part *= self.conse.weight
        return part.astype(self.dtype, copy=False)

    def _proj(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """``z`` plus, for the MLP, the pre-activation and hidden activations the backward pass needs."""
        p = self.params
        if self.kind == "linear":
            z = features @ p["w"]
            z += p["b"]
            return z, None, None
        pre = features @ p["w1"]
        pre += p["b1"]
        hidden = np.maximum(pre, 0.0)
        z = hidden @ p["w"]
        z += p["b"]
        return z, pre, hidden

    def embed(self, features: np.ndarray, conse: np.ndarray | None = None) -> np.ndarray:
        """Unnormalised concept-space embedding ``e(f)`` (n, D); ``conse`` as in ``frozen_part``."""
        z, _, _ = self._proj(features)
        frozen = self.frozen_part(features, conse)
        if frozen is not None:
            z += frozen
        return z

    def embed_unit(self, features: np.ndarray, conse: np.ndarray | None = None) -> np.ndarray:
        """``e(f) / |e(f)|``: what prediction compares to the anchors."""
        e = self.embed(features, conse)
        e /= np.sqrt(np.einsum("nd,nd->n", e, e) + _NORM_EPS_SQ)[:, None]
        return e

    def logits(self, features: np.ndarray, anchors: np.ndarray) -> np.ndarray:
        """Temperature-scaled cosine similarities (n, K) to the rows of ``anchors``."""
        return self.temperature * (self.embed_unit(features) @ anchors.T)

    def loss_and_grads(
        self,
        features: np.ndarray,
        targets: np.ndarray,
        anchors: np.ndarray,
        frozen: np.ndarray | None = None,
        out: dict[str, np.ndarray] | None = None,
    ) -> tuple[float, dict[str, np.ndarray]]:
        """Mean cross-entropy of ``targets`` (row indices into ``anchors``) and d loss / d params.

        ``frozen``: ``frozen_part(features)`` if the caller has it already (cached for replay samples).
        ``out``: arrays shaped like ``params`` to write the gradients into, so a step allocates no MBs.
        """
        n = features.shape[0]
        rows = np.arange(n)
        z, pre, hidden = self._proj(features)
        if frozen is None:
            frozen = self.frozen_part(features)
        e = z if frozen is None else z + frozen
        norm = np.sqrt(np.einsum("nd,nd->n", e, e) + _NORM_EPS_SQ)[:, None]
        u = e / norm
        s = u @ anchors.T
        s *= self.temperature
        s -= s.max(axis=1, keepdims=True)
        p = np.exp(s)
        total = p.sum(axis=1, keepdims=True)
        loss = float(np.mean(np.log(total[:, 0]) - s[rows, targets]))
        # d loss / d s = (softmax - onehot) / n
        p /= total
        p[rows, targets] -= 1.0
        p *= self.temperature / n
        du = p @ anchors
        de = du - u * np.einsum("nd,nd->n", du, u)[:, None]
        de /= norm
        grads = out if out is not None else {k: np.empty_like(v) for k, v in self.params.items()}
        np.sum(de, axis=0, out=grads["b"])
        np.matmul((features if hidden is None else hidden).T, de, out=grads["w"])
        if hidden is not None:
            d_hidden = de @ self.params["w"].T
            d_hidden *= pre > 0
            np.matmul(features.T, d_hidden, out=grads["w1"])
            np.sum(d_hidden, axis=0, out=grads["b1"])
        return loss, grads

    def nbytes(self) -> int:
        """Trainable parameters plus the frozen ConSE branch."""
        total = sum(v.nbytes for v in self.params.values())
        if self.conse is not None:
            total += self.conse.fc_w.nbytes + self.conse.fc_b.nbytes + self.conse.anchors.nbytes
        return total
