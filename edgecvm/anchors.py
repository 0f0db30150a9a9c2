"""Anchor files: the fixed concept space every prediction is made in (device side, numpy only).

An anchor file holds one unit vector per concept (float16, or int8 with a
per-row scale), the concept names, the language model that made them and the
prompt templates used, in a checksummed container (format ``edgecvm.anchors``).
Loading dequantises to float32 unit rows and verifies the file, so a tampered
anchor file cannot silently move concepts around.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecvm.errors import BadInputError, IntegrityError
from edgecvm.integrity import load_container, save_container

ANCHORS_FORMAT = "edgecvm.anchors"
ANCHORS_VERSION = 1
DTYPES = ("float16", "int8")
_FIX = "rebuild it with `edgecvm anchors build`"


def normalise_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


@dataclass(frozen=True)
class AnchorSet:
    names: tuple[str, ...]
    vectors: np.ndarray  # (N, D) float32, unit rows
    model: str
    templates: tuple[str, ...] = ()
    dtype: str = "float16"

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.names)

    def _lookup(self) -> dict[str, int]:
        table = self.__dict__.get("_table")
        if table is None:
            table = {name.casefold(): i for i, name in enumerate(self.names)}
            object.__setattr__(self, "_table", table)
        return table

    def index_of(self, name: str) -> int:
        """Index of a concept (case-insensitive); unknown names fail with the closest ones."""
        idx = self._lookup().get(name.strip().casefold())
        if idx is None:
            close = difflib.get_close_matches(name, self.names, n=5, cutoff=0.5)
            hint = f"; close names: {', '.join(close)}" if close else ""
            raise BadInputError(f"unknown concept {name!r}: not in the anchor file ({len(self)} concepts){hint}. "
                                "Add it with `edgecvm anchors extend`")
        return idx

    def indices_of(self, names: Iterable[str]) -> np.ndarray:
        return np.array([self.index_of(n) for n in names], dtype=np.int64)

    def subset(self, names: Iterable[str]) -> AnchorSet:
        idx = self.indices_of(names)
        return AnchorSet(tuple(self.names[i] for i in idx), self.vectors[idx], self.model, self.templates, self.dtype)


def quantise(vectors: np.ndarray, dtype: str) -> dict[str, np.ndarray]:
    """Storage arrays for unit rows: float16, or int8 with a per-row scale (4x smaller than float32)."""
    if dtype == "float16":
        return {"vectors": vectors.astype(np.float16)}
    if dtype == "int8":
        scale = np.maximum(np.abs(vectors).max(axis=1), 1e-12) / 127.0
        q = np.clip(np.round(vectors / scale[:, None]), -127, 127).astype(np.int8)
        return {"vectors": q, "scales": scale.astype(np.float32)}
    raise BadInputError(f"unknown anchor dtype {dtype!r}; choose one of {', '.join(DTYPES)}")


def save_anchors(path: str | Path, anchors: AnchorSet, dtype: str = "float16", extra: dict | None = None) -> str:
    """Write an anchor file atomically; returns its sha256."""
    arrays = quantise(anchors.vectors, dtype)
    arrays["names"] = np.frombuffer(json.dumps(list(anchors.names)).encode(), dtype=np.uint8)
    meta = {"model": anchors.model, "dim": anchors.dim, "count": len(anchors), "dtype": dtype,
            "templates": list(anchors.templates), **(extra or {})}
    return save_container(path, ANCHORS_FORMAT, ANCHORS_VERSION, arrays, meta)


def load_anchors(path: str | Path) -> AnchorSet:
    arrays, meta = load_container(path, ANCHORS_FORMAT, (ANCHORS_VERSION,), _FIX)
    try:
        names = tuple(json.loads(arrays["names"].tobytes().decode()))
        stored = arrays["vectors"]
        dtype = meta["dtype"]
        if dtype == "int8":
            vectors = stored.astype(np.float32) * arrays["scales"][:, None]
        else:
            vectors = stored.astype(np.float32)
        model, templates = str(meta["model"]), tuple(meta.get("templates", ()))
    except (KeyError, ValueError, TypeError) as exc:
        raise IntegrityError(f"{path}: anchor file is missing a field ({exc}); {_FIX}") from None
    if vectors.ndim != 2 or vectors.shape != (len(names), meta.get("dim")) or len(set(names)) != len(names):
        raise IntegrityError(f"{path}: anchor vectors {vectors.shape} do not match {len(names)} unique names; {_FIX}")
    if not np.isfinite(vectors).all():
        raise IntegrityError(f"{path}: anchor vectors contain NaN/Inf; {_FIX}")
    return AnchorSet(names, normalise_rows(vectors), model, templates, dtype)


def nearest_pairs(anchors: AnchorSet, k: int = 5) -> list[tuple[str, str, float]]:
    """The k most similar distinct concept pairs: a quick sanity view of the concept space."""
    n = len(anchors)
    if n < 2:
        return []
    sims = anchors.vectors @ anchors.vectors.T
    iu = np.triu_indices(n, 1)
    flat = sims[iu]
    top = np.argsort(-flat)[:k]
    return [(anchors.names[iu[0][t]], anchors.names[iu[1][t]], float(flat[t])) for t in top]
