"""Anchor files: the fixed concept space every prediction is made in (device side, numpy only).

An anchor file holds one unit vector per concept, the concept names, the
language model that made them and the prompt templates used, in a checksummed
container (format ``edgecvm.anchors``, see edgecvm/resources/anchors/README.md). Vectors are
stored as float16 (default; 1,000 x 384 fits in < 800 kB) or as int8 with a
per-row float32 scale (half that again). Loading verifies the file's sha256
and every shape and dequantises to float32 unit rows, so a tampered or
truncated anchor file cannot silently move concepts around.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgecvm.errors import BadInputError, IntegrityError
from edgecvm.formats.integrity import load_container, save_container

ANCHORS_FORMAT = "edgecvm.anchors"
ANCHORS_VERSION = 1
DTYPES = ("float16", "int8")
_FIX = "rebuild it with `edgecvm anchors build`"


def normalise_rows(vectors: np.ndarray) -> np.ndarray:
    """float32 copy with every row scaled to unit length (all-zero rows stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


@dataclass(frozen=True, eq=False)
class AnchorSet:
    """Concept names and their unit vectors; row i of ``vectors`` is concept ``names[i]``."""

    names: tuple[str, ...]
    vectors: np.ndarray  # (N, D) float32 unit rows
    model: str  # id of the sentence-transformers model that embedded the names
    templates: tuple[str, ...]  # prompt templates ensembled per name ("{}" = the bare name)
    dtype: str  # storage precision in the file: float16 or int8
    # The model's embedding of a fixed probe sentence: tells on `extend` whether a model is the very same one.
    model_probe: np.ndarray | None = None
    _index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        names = tuple(self.names)
        vectors = np.asarray(self.vectors, dtype=np.float32)
        if not all(isinstance(n, str) and n and n == " ".join(n.split()) for n in names):
            # index_of normalises whitespace (as concept lists do); any other name could never be looked up.
            raise BadInputError("anchor concept names must be non-empty strings with single spaces only")
        if vectors.ndim != 2 or vectors.shape[0] != len(names):
            raise BadInputError(f"anchor vectors {vectors.shape} do not match {len(names)} concept names")
        index = {name.casefold(): i for i, name in enumerate(names)}
        if len(index) != len(names):
            raise BadInputError("anchor concept names must be unique (case-insensitively)")
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "vectors", vectors)
        object.__setattr__(self, "templates", tuple(self.templates))
        if self.model_probe is not None:
            probe = np.asarray(self.model_probe, dtype=np.float32)
            if probe.shape != (vectors.shape[1],):
                raise BadInputError(f"model probe {probe.shape} does not match the {vectors.shape[1]}-d anchors")
            object.__setattr__(self, "model_probe", probe)
        object.__setattr__(self, "_index", index)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.names)

    def index_of(self, name: str) -> int:
        """Row of a concept, matched case-insensitively; unknown names fail listing close ones."""
        idx = self._index.get(" ".join(name.split()).casefold())
        if idx is not None:
            return idx
        close = self.close_names(name)
        hint = f" Close names: {', '.join(repr(c) for c in close)}." if close else ""
        raise BadInputError(
            f"unknown concept {name!r}: not among the {len(self)} anchors.{hint} "
            "Add new concepts with `edgecvm anchors extend`"
        )

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and " ".join(name.split()).casefold() in self._index

    def close_names(self, name: str, n: int = 5) -> list[str]:
        """Up to ``n`` concept names spelled like ``name`` (what a user may have meant), closest first."""
        by_folded = {c.casefold(): c for c in self.names}
        return [by_folded[c] for c in difflib.get_close_matches(name.casefold(), list(by_folded), n=n, cutoff=0.6)]

    def extended(self, other: AnchorSet) -> AnchorSet:
        """These concepts followed by ``other``'s, which must be new names of the same model and dimension."""
        if other.dim != self.dim or other.model != self.model:
            raise BadInputError(f"cannot add {other.dim}-d anchors of {other.model} to {self.dim}-d anchors of "
                                f"{self.model}: they are different concept spaces")
        return AnchorSet(self.names + other.names, np.vstack([self.vectors, other.vectors]), self.model,
                         self.templates, self.dtype, self.model_probe)

    def indices_of(self, names: Iterable[str]) -> np.ndarray:
        return np.array([self.index_of(n) for n in names], dtype=np.int64)

    def subset(self, names: Iterable[str]) -> AnchorSet:
        """The named concepts only, in the order given (e.g. the classes of one task)."""
        idx = self.indices_of(names)
        return AnchorSet(tuple(self.names[i] for i in idx), self.vectors[idx], self.model, self.templates, self.dtype,
                         self.model_probe)


def quantise(vectors: np.ndarray, dtype: str) -> dict[str, np.ndarray]:
    """Storage arrays for unit rows: float16, or int8 with a per-row scale (max |x| maps to 127)."""
    if dtype == "float16":
        return {"vectors": vectors.astype(np.float16)}
    if dtype == "int8":
        scale = (np.maximum(np.abs(vectors).max(axis=1), 1e-12) / 127.0).astype(np.float32)
        q = np.clip(np.round(vectors / scale[:, None]), -127, 127).astype(np.int8)
        return {"vectors": q, "scales": scale}
    raise BadInputError(f"unknown anchor dtype {dtype!r}; choose one of {', '.join(DTYPES)}")


def _dequantise(path: str | Path, arrays: dict[str, np.ndarray], dtype: str, count: int) -> np.ndarray:
    stored = arrays.get("vectors")
    expected = {"float16": np.float16, "int8": np.int8}.get(dtype) if isinstance(dtype, str) else None if isinstance(dtype, str) else None
    if expected is None or stored is None or stored.dtype != expected or stored.ndim != 2 or len(stored) != count:
        raise IntegrityError(f"{path}: anchor vectors are missing or not ({count}, D) {dtype}; {_FIX}")
    if dtype == "float16":
        return stored.astype(np.float32)
    scales = arrays.get("scales")
    if scales is None or scales.shape != (count,):
        raise IntegrityError(f"{path}: int8 anchors need one scale per row; {_FIX}")
    return stored.astype(np.float32) * scales.astype(np.float32)[:, None]


def encode_names(names: Iterable[str]) -> np.ndarray:
    """Names as a uint8 array of UTF-8 JSON: no pickle, no object arrays."""
    return np.frombuffer(json.dumps(list(names), ensure_ascii=False).encode("utf-8"), dtype=np.uint8)


def save_anchors(path: str | Path, anchors: AnchorSet, dtype: str = "float16", keep_previous: bool = False) -> str:
    """Write an anchor file atomically at ``dtype`` precision; returns the file's sha256.

    ``keep_previous``: the file being replaced stays as ``<name>.prev``."""
    arrays = quantise(anchors.vectors, dtype)
    arrays["names"] = encode_names(anchors.names)
    if anchors.model_probe is not None:
        arrays["model_probe"] = anchors.model_probe.astype(np.float32)
    meta = {"model": anchors.model, "dim": anchors.dim, "count": len(anchors), "dtype": dtype,
            "templates": list(anchors.templates)}
    return save_container(path, ANCHORS_FORMAT, ANCHORS_VERSION, arrays, meta, keep_previous)


def load_anchors(path: str | Path) -> AnchorSet:
    """Read and verify an anchor file (checksum, fields, shapes) into float32 unit rows."""
    arrays, meta = load_container(path, ANCHORS_FORMAT, (ANCHORS_VERSION,), _FIX)
    try:
        names = json.loads(arrays["names"].tobytes().decode("utf-8"))
        model, dtype, dim, count = meta["model"], meta["dtype"], meta["dim"], meta["count"]
        templates = meta["templates"]
    except (KeyError, ValueError) as exc:
        raise IntegrityError(f"{path}: anchor file lacks a valid field ({exc}); {_FIX}") from None
    if not (isinstance(count, int) and isinstance(dim, int)):  # checked first: both go into the messages below
        raise IntegrityError(f"{path}: anchor count and dim are not whole numbers; {_FIX}")
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names) and len(names) == count):
        raise IntegrityError(f"{path}: concept names are not a list of {count} strings; {_FIX}")
    if not (isinstance(templates, list) and all(isinstance(t, str) for t in templates)):
        raise IntegrityError(f"{path}: templates are not a list of strings; {_FIX}")
    vectors = _dequantise(path, arrays, dtype, count)
    if vectors.shape[1] != dim or not np.isfinite(vectors).all():
        raise IntegrityError(f"{path}: anchor vectors are not {count}x{dim} finite numbers; {_FIX}")
    probe = arrays.get("model_probe")
    if probe is not None and not (probe.dtype == np.float32 and probe.shape == (dim,) and np.isfinite(probe).all()):
        raise IntegrityError(f"{path}: model_probe is not {dim} finite float32 numbers; {_FIX}")
    try:
        return AnchorSet(tuple(names), normalise_rows(vectors), str(model), tuple(templates), dtype, probe)
    except BadInputError as exc:
        raise IntegrityError(f"{path}: {exc}; {_FIX}") from None


def nearest_pairs(anchors: AnchorSet, k: int = 5, block: int = 1024) -> list[tuple[str, str, float]]:
    """The k most similar distinct concept pairs (cosine): a quick sanity view of the concept space.

    Computed a block of rows at a time so a 21k-concept file needs ~100 MB, not a 2 GB matrix.
    """
    n = len(anchors)
    if k < 1:
        return []
    best: list[tuple[float, int, int]] = []
    for start in range(0, n, block):
        sims = anchors.vectors[start : start + block] @ anchors.vectors.T
        rows = np.arange(start, start + len(sims))
        sims[np.arange(n)[None, :] <= rows[:, None]] = -np.inf  # each pair once, no self-pairs
        flat = sims.ravel()
        top = np.argpartition(-flat, k - 1)[:k] if k < flat.size else np.arange(flat.size)
        best += [(float(flat[t]), start + int(t) // n, int(t) % n) for t in top if np.isfinite(flat[t])]
        best = sorted(best, key=lambda p: (-p[0], p[1], p[2]))[:k]
    return [(anchors.names[i], anchors.names[j], s) for s, i, j in best]
