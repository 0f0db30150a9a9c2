"""Anchor files: the fixed concept space every prediction is made in (device side, numpy only).

An anchor file holds one unit vector per concept, the concept names, the
language model that made them and the prompt templates used, in a checksummed
container (format ``edgecvm.anchors``, see edgecvm/resources/anchors/README.md). Vectors are
stored as float16 (default; 1,000 x 384 fits in < 800 kB) or as int8 with a
per-row float32 scale (half that again: the 21,843-concept ImageNet-21k file
ships as int8). Loading verifies the file's sha256 and every shape, so a
tampered or truncated anchor file cannot silently move concepts around; an
int8 file stays int8 in memory (see ``AnchorSet``).
"""

from __future__ import annotations

import difflib
import json
import sys
from collections.abc import Iterable, Sequence
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


# int8 rows dequantised at a time when scoring: 96 kB of float32 at D = 384, which stays in a core's cache. Measured
# (host, one frame against 21,843 anchors): 64 rows 2.5-3.0 ms, as fast as a float32 matrix (3.0 ms); 128 rows 9 ms,
# 2,048 rows 54 ms (each block left the cache before the product read it).
SCORE_BLOCK = 64


class AnchorSet:
    """Concept names and their unit vectors; row i is concept ``names[i]``.

    Held as float32 unit rows, or, for an int8 anchor file, as its int8 codes
    with one float32 factor per row (``row_scales``: code row x factor = unit
    row). Why: a 21,843-concept file is 33.5 MB as float32 but 8.5 MB as int8,
    which decides whether it fits a 100 MB device budget; ``similarities``
    dequantises SCORE_BLOCK rows at a time, so the float32 matrix never exists
    and scoring costs what a float32 matrix would.
    ``vectors`` is the float32 matrix (a fresh copy when held as int8: for
    offline tools); the device uses ``rows`` and ``similarities``.
    """

    def __init__(self, names: Iterable[str], vectors: np.ndarray, model: str, templates: Iterable[str], dtype: str,
                 model_probe: np.ndarray | None = None, *, row_scales: np.ndarray | None = None) -> None:
        self.names = tuple(names)
        self.model = model  # id of the sentence-transformers model that embedded the names
        self.templates = tuple(templates)  # prompt templates ensembled per name ("{}" = the bare name)
        self.dtype = dtype  # storage precision in the file: float16 or int8
        if not all(isinstance(n, str) and n and n == " ".join(n.split()) for n in self.names):
            # index_of normalises whitespace (as concept lists do); any other name could never be looked up.
            raise BadInputError("anchor concept names must be non-empty strings with single spaces only")
        if row_scales is None:
            stored = np.asarray(vectors, dtype=np.float32)
        else:
            stored, row_scales = np.asarray(vectors), np.asarray(row_scales, dtype=np.float32)
            if stored.dtype != np.int8 or row_scales.shape != stored.shape[:1]:
                raise BadInputError("int8 anchors need int8 codes and one scale per row")
        if stored.ndim != 2 or stored.shape[0] != len(self.names):
            raise BadInputError(f"anchor vectors {stored.shape} do not match {len(self.names)} concept names")
        self._stored, self._row_scales = stored, row_scales
        self._index = {name.casefold(): i for i, name in enumerate(self.names)}
        if len(self._index) != len(self.names):
            raise BadInputError("anchor concept names must be unique (case-insensitively)")
        # The model's embedding of a fixed probe sentence: tells on `extend` whether a model is the very same one.
        self.model_probe = None if model_probe is None else np.asarray(model_probe, dtype=np.float32)
        if self.model_probe is not None and self.model_probe.shape != (self.dim,):
            raise BadInputError(f"model probe {self.model_probe.shape} does not match the {self.dim}-d anchors")

    @property
    def dim(self) -> int:
        return int(self._stored.shape[1])

    def __len__(self) -> int:
        return len(self.names)

    @property
    def resident_bytes(self) -> int:
        """What the set holds in memory (the memory plan's figure): the vectors as held (int8: codes, factors and
        the float32 block ``similarities`` makes), the names and their case-folded index."""
        vectors = self._stored.nbytes
        if self._row_scales is not None:
            vectors += self._row_scales.nbytes + min(SCORE_BLOCK, len(self)) * self.dim * 4
        names = sys.getsizeof(self.names) + sum(sys.getsizeof(n) for n in self.names)
        index = sys.getsizeof(self._index) + sum(sys.getsizeof(i) + (sys.getsizeof(k) if k != self.names[i] else 0)
                                                  for k, i in self._index.items())
        return vectors + names + index

    @property
    def vectors(self) -> np.ndarray:
        """(N, D) float32 unit rows."""
        return self.rows(slice(None))

    def rows(self, index: np.ndarray | Sequence[int] | slice) -> np.ndarray:
        """float32 unit rows of the given concept indices."""
        if self._row_scales is None:
            return self._stored[index]
        return self._stored[index].astype(np.float32) * self._row_scales[index, None]

    def similarities(self, embeddings: np.ndarray) -> np.ndarray:
        """(n, N) dot products of n (D,) embeddings with every anchor: cosines for unit embeddings."""
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if self._row_scales is None:
            return embeddings @ self._stored.T
        out = np.empty((embeddings.shape[0], len(self)), dtype=np.float32)
        for start in range(0, len(self), SCORE_BLOCK):
            block = self._stored[start : start + SCORE_BLOCK].astype(np.float32)
            np.matmul(embeddings, block.T, out=out[:, start : start + len(block)])
        out *= self._row_scales
        return out

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
        if self._row_scales is None:
            return AnchorSet(self.names + other.names, np.vstack([self._stored, other.vectors]), self.model,
                             self.templates, self.dtype, self.model_probe)
        # Held as int8 (e.g. the 21k file): the new rows join as int8 codes, so no float32 matrix is ever made.
        codes = quantise(other.vectors, "int8")["vectors"]
        scales = 1.0 / np.maximum(_code_norms(codes), 1e-12)
        return AnchorSet(self.names + other.names, np.vstack([self._stored, codes]), self.model, self.templates,
                         self.dtype, self.model_probe, row_scales=np.concatenate([self._row_scales, scales]))

    def indices_of(self, names: Iterable[str]) -> np.ndarray:
        return np.array([self.index_of(n) for n in names], dtype=np.int64)

    def subset(self, names: Iterable[str]) -> AnchorSet:
        """The named concepts only, in the order given (e.g. the classes of one task)."""
        idx = self.indices_of(names)
        return AnchorSet(tuple(self.names[i] for i in idx), self.rows(idx), self.model, self.templates, self.dtype,
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


def _stored_rows(path: str | Path, arrays: dict[str, np.ndarray], dtype: object, count: int,
                 dim: int, fix: str) -> tuple[np.ndarray, np.ndarray | None]:
    """float32 unit rows (float16 files), or the int8 codes and the factor that makes each a unit row (int8 files)."""
    stored = arrays.get("vectors")
    expected = {"float16": np.float16, "int8": np.int8}.get(dtype) if isinstance(dtype, str) else None
    if expected is None or stored is None or stored.dtype != expected or stored.ndim != 2 or len(stored) != count:
        raise IntegrityError(f"{path}: anchor vectors are missing or not ({count}, D) {dtype}; {fix}")
    vectors = stored.astype(np.float32) if dtype == "float16" else None
    if stored.shape[1] != dim or (vectors is not None and not np.isfinite(vectors).all()):
        raise IntegrityError(f"{path}: anchor vectors are not {count}x{dim} finite numbers; {fix}")
    if vectors is not None:
        return normalise_rows(vectors), None
    scales = arrays.get("scales")
    if scales is None or scales.shape != (count,) or not (np.isfinite(scales).all() and (scales > 0).all()):
        raise IntegrityError(f"{path}: int8 anchors need one positive finite scale per row; {fix}")
    # A row's scale only sets its length, which re-normalising to unit length drops: code row / its norm is the row.
    return stored, 1.0 / np.maximum(_code_norms(stored), 1e-12)


def _code_norms(codes: np.ndarray) -> np.ndarray:
    """Row norms of int8 codes, a block at a time (no float32 copy of the whole matrix)."""
    norms = np.empty(len(codes), dtype=np.float32)
    for start in range(0, len(codes), SCORE_BLOCK):
        block = codes[start : start + SCORE_BLOCK].astype(np.float32)
        norms[start : start + len(block)] = np.sqrt(np.einsum("ij,ij->i", block, block))
    return norms


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


def load_anchors(path: str | Path, fix: str = _FIX) -> AnchorSet:
    """Read and verify an anchor file (checksum, fields, shapes): unit rows, held as int8 when the file is.
    ``fix``: what an error tells the user to do (a state dir's own anchors are not rebuilt from a concept list)."""
    arrays, meta = load_container(path, ANCHORS_FORMAT, (ANCHORS_VERSION,), fix)
    try:
        names = json.loads(arrays["names"].tobytes().decode("utf-8"))
        model, dtype, dim, count = meta["model"], meta["dtype"], meta["dim"], meta["count"]
        templates = meta["templates"]
    except (KeyError, ValueError) as exc:
        raise IntegrityError(f"{path}: anchor file lacks a valid field ({exc}); {fix}") from None
    if not (isinstance(count, int) and isinstance(dim, int)):  # checked first: both go into the messages below
        raise IntegrityError(f"{path}: anchor count and dim are not whole numbers; {fix}")
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names) and len(names) == count):
        raise IntegrityError(f"{path}: concept names are not a list of {count} strings; {fix}")
    if not (isinstance(templates, list) and all(isinstance(t, str) for t in templates)):
        raise IntegrityError(f"{path}: templates are not a list of strings; {fix}")
    stored, row_scales = _stored_rows(path, arrays, dtype, count, dim, fix)
    probe = arrays.get("model_probe")
    if probe is not None and not (probe.dtype == np.float32 and probe.shape == (dim,) and np.isfinite(probe).all()):
        raise IntegrityError(f"{path}: model_probe is not {dim} finite float32 numbers; {fix}")
    try:
        return AnchorSet(tuple(names), stored, str(model), tuple(templates), dtype, probe, row_scales=row_scales)
    except BadInputError as exc:
        raise IntegrityError(f"{path}: {exc}; {fix}") from None


def nearest_pairs(anchors: AnchorSet, k: int = 5, block: int = 1024) -> list[tuple[str, str, float]]:
    """The k most similar distinct concept pairs (cosine): a quick sanity view of the concept space.

    Computed a block of rows at a time so a 21k-concept file needs ~100 MB, not a 2 GB matrix.
    """
    n = len(anchors)
    if k < 1:
        return []
    best: list[tuple[float, int, int]] = []
    for start in range(0, n, block):
        sims = anchors.similarities(anchors.rows(slice(start, start + block)))
        rows = np.arange(start, start + len(sims))
        sims[np.arange(n)[None, :] <= rows[:, None]] = -np.inf  # each pair once, no self-pairs
        flat = sims.ravel()
        top = np.argpartition(-flat, k - 1)[:k] if k < flat.size else np.arange(flat.size)
        best += [(float(flat[t]), start + int(t) // n, int(t) % n) for t in top if np.isfinite(flat[t])]
        best = sorted(best, key=lambda p: (-p[0], p[1], p[2]))[:k]
    return [(anchors.names[i], anchors.names[j], s) for s, i, j in best]
