"""``head.npz``: the projection head's parameters and its fixed ConSE branch.

The head maps a backbone feature ``f`` to a point in concept space:

    e(f) = proj(f) + conse_weight * conse(f)

``proj`` is the trainable part (linear ``f @ w + b``, or an MLP
``relu(f @ w1 + b1) @ w + b``). ``conse`` is frozen: the ImageNet classifier
of the backbone plus the anchors of the 1,000 ImageNet classes in the same
concept space; ``conse(f)`` is the softmax-weighted mean of the anchors of the
top-T classes (Norouzi et al. 2014, ConSE). A ``conse`` export sets
``conse_weight = 1`` and ``proj = 0`` so the device names concepts zero-shot
from the first frame; training moves ``proj`` as a residual on top. A
``random`` export has no ConSE branch. Keeping the branch inside the head (not
in the ONNX graph) is why the backbone can output plain 1,280-d features.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from edgecvm.errors import IntegrityError
from edgecvm.formats.integrity import load_container, save_container

HEAD_FORMAT = "edgecvm.head"
HEAD_VERSION = 1
_FIX = "re-export the bundle with `edgecvm export`"

HeadKind = Literal["linear", "mlp"]


@dataclass
class ConseBranch:
    fc_w: np.ndarray  # (feature_dim, n_classes) float32: the frozen ImageNet classifier
    fc_b: np.ndarray  # (n_classes,)
    anchors: np.ndarray  # (n_classes, concept_dim) float32 unit rows
    top_t: int = 10
    weight: float = 1.0


@dataclass
class HeadParams:
    kind: HeadKind
    feature_dim: int
    concept_dim: int
    params: dict[str, np.ndarray]  # linear: w, b; mlp: w1, b1, w, b
    temperature: float = 16.0  # cosine logits are scaled by this before softmax
    hidden_dim: int = 0
    conse: ConseBranch | None = None
    extra_meta: dict[str, object] = field(default_factory=dict)

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        if self.kind == "linear":
            return {"w": (self.feature_dim, self.concept_dim), "b": (self.concept_dim,)}
        return {
            "w1": (self.feature_dim, self.hidden_dim),
            "b1": (self.hidden_dim,),
            "w": (self.hidden_dim, self.concept_dim),
            "b": (self.concept_dim,),
        }


def save_head(path: str | Path, head: HeadParams) -> str:
    """Write the head atomically; returns the file's sha256."""
    arrays = {f"proj.{k}": np.asarray(v, dtype=np.float32) for k, v in head.params.items()}
    meta: dict[str, object] = {
        "kind": head.kind,
        "feature_dim": head.feature_dim,
        "concept_dim": head.concept_dim,
        "hidden_dim": head.hidden_dim,
        "temperature": head.temperature,
        "extra": head.extra_meta,
    }
    if head.conse is not None:
        arrays["conse.fc_w"] = head.conse.fc_w.astype(np.float32)
        arrays["conse.fc_b"] = head.conse.fc_b.astype(np.float32)
        arrays["conse.anchors"] = head.conse.anchors.astype(np.float32)
        meta["conse"] = {"top_t": head.conse.top_t, "weight": head.conse.weight}
    return save_container(path, HEAD_FORMAT, HEAD_VERSION, arrays, meta)


def load_head(path: str | Path) -> HeadParams:
    """Load and validate a head file (checksum, kind, every shape)."""
    arrays, meta = load_container(path, HEAD_FORMAT, (HEAD_VERSION,), _FIX)
    try:
        head = HeadParams(
            kind=meta["kind"],
            feature_dim=int(meta["feature_dim"]),
            concept_dim=int(meta["concept_dim"]),
            hidden_dim=int(meta["hidden_dim"]),
            temperature=float(meta["temperature"]),
            params={k.removeprefix("proj."): v for k, v in arrays.items() if k.startswith("proj.")},
            extra_meta=dict(meta.get("extra", {})),
        )
        if "conse" in meta:
            head.conse = ConseBranch(
                fc_w=arrays["conse.fc_w"],
                fc_b=arrays["conse.fc_b"],
                anchors=arrays["conse.anchors"],
                top_t=int(meta["conse"]["top_t"]),
                weight=float(meta["conse"]["weight"]),
            )
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise IntegrityError(f"{path}: head metadata incomplete ({exc}); {_FIX}") from None
    if head.kind not in ("linear", "mlp"):
        raise IntegrityError(f"{path}: unknown head kind {head.kind!r}; {_FIX}")
    expected = head.expected_shapes()
    got = {k: tuple(v.shape) for k, v in head.params.items()}
    if got != expected:
        raise IntegrityError(f"{path}: head parameter shapes {got} do not match {expected}; {_FIX}")
    weights = list(head.params.values())
    if head.conse is not None:
        n = head.conse.fc_b.shape[0] if head.conse.fc_b.ndim == 1 else -1
        if n < 1 or head.conse.fc_w.shape != (head.feature_dim, n) or head.conse.anchors.shape != (n, head.concept_dim):
            raise IntegrityError(f"{path}: ConSE branch shapes do not match the head dims; {_FIX}")
        if head.conse.top_t < 1 or not math.isfinite(head.conse.weight):
            raise IntegrityError(f"{path}: ConSE top_t must be >= 1 and its weight finite; {_FIX}")
        weights += [head.conse.fc_w, head.conse.fc_b, head.conse.anchors]
    # save_head writes finite float32 only; anything else would train or predict garbage.
    if not all(w.dtype == np.float32 and np.isfinite(w).all() for w in weights):
        raise IntegrityError(f"{path}: head weights are not finite float32 numbers; {_FIX}")
    if not (math.isfinite(head.temperature) and head.temperature > 0):
        raise IntegrityError(f"{path}: head temperature must be a finite number > 0; {_FIX}")
    return head
