"""ConSE zero-shot embedding (Norouzi et al. 2014): classifier probabilities → a point in concept space.

The frozen ImageNet classifier scores 1,000 classes; the top-T probabilities,
renormalised, weight the anchors of those classes. The result lies in the
same concept space as every anchor, so an unseen concept ("tabby cat" when
the classifier knows "tiger cat" and "Egyptian cat") can be named before the
device has seen a single labelled example.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from edgecvm.formats.head_file import ConseBranch
from edgecvm.formats.integrity import new_blake2b

_KEY_BYTES = 16  # a row's BLAKE2b-128 digest: what ConseCodes keys its rows by


def conse_weights(features: np.ndarray, branch: ConseBranch) -> tuple[np.ndarray, np.ndarray]:
    """Top-T class indices (n, T) and their renormalised softmax weights (n, T)."""
    logits = features @ branch.fc_w
    logits += branch.fc_b  # in place, and no negated copy below: (n, 1000) arrays are the memory here
    t = min(branch.top_t, logits.shape[1])
    top = np.argpartition(logits, logits.shape[1] - t, axis=1)[:, -t:]
    top_logits = np.take_along_axis(logits, top, axis=1)
    # Softmax over all classes, restricted to the top T and renormalised = softmax over the top T.
    w = np.exp(top_logits - top_logits.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    return top, w.astype(np.float32)


def conse_embed(features: np.ndarray, branch: ConseBranch) -> np.ndarray:
    """(n, D) probability-weighted mean of the anchors of each feature's top-T ImageNet classes."""
    return _embed_weighted(*conse_weights(features, branch), branch)


def _embed_weighted(top: np.ndarray, w: np.ndarray, branch: ConseBranch) -> np.ndarray:
    return np.einsum("nt,ntd->nd", w, branch.anchors[top]).astype(np.float32)


def build_conse_branch(fc_w: np.ndarray, fc_b: np.ndarray, class_anchors: np.ndarray, top_t: int = 10) -> ConseBranch:
    """Branch from an (n_classes, F) torch-layout classifier and (n_classes, D) anchors in classifier order."""
    return ConseBranch(fc_w=np.ascontiguousarray(fc_w.T, dtype=np.float32), fc_b=fc_b.astype(np.float32),
                       anchors=class_anchors.astype(np.float32), top_t=top_t, weight=1.0)


class ConseCodes:
    """``conse_embed`` of rows that are embedded again and again, keeping each row's top-T classes and weights
    (by its content) while it stays among the rows asked for.

    Why: the "lda" head embeds its calibration pool at every blend fit, every
    16-25 samples early in a stream, and the pool then holds nearly the same
    rows each time; recomputing the classifier product behind each embedding,
    (rows x F) @ (F x 1,000), at every fit costs a quarter of that head's
    update CPU over a 200-frame stream (docs/benchmarks.md). A row's codes take 80 bytes, not the 1.5 kB
    of its embedding. Rows are keyed by a 128-bit BLAKE2 digest of their bytes.

    The codes are saved with the state (``state_arrays``): BLAS rounds a row of a matrix product differently
    with the rows beside it (OpenBLAS on AVX2 does), so a resumed state that computed every pooled row's
    codes at once would drift by a few ulps from the run that wrote it, which had computed them a few at a
    time. Computing each row alone would avoid that too, at 13 % more of the ``lda`` head's learning time
    (docs/benchmarks.md).
    """

    def __init__(self, branch: ConseBranch, chunk: int) -> None:
        self.branch, self.chunk = branch, chunk  # rows embedded at once: bounds the (chunk, T, D) anchor gather
        self._row_of: dict[bytes, int] = {}
        t = min(branch.top_t, branch.fc_w.shape[1])  # as conse_weights takes them
        self._top, self._w = np.zeros((0, t), dtype=np.int32), np.zeros((0, t), dtype=np.float32)

    @staticmethod
    def nbytes_for(rows: int, top_t: int) -> int:
        return rows * (top_t * 8 + 128)  # class and weight per top-T entry, a digest and its dict slot

    def embed(self, rows: np.ndarray) -> np.ndarray:
        """(n, D) float32 ``conse_embed`` of ``rows`` (n, F), computed ``chunk`` rows at a time for the rows not
        asked for last time; afterwards the codes of exactly these rows are kept."""
        keys = [new_blake2b(np.ascontiguousarray(row), digest_size=_KEY_BYTES).digest() for row in rows]
        known = np.array([self._row_of.get(key, -1) for key in keys], dtype=np.int64)
        have, missing = np.flatnonzero(known >= 0), np.flatnonzero(known < 0)
        top = np.empty((len(keys), self._top.shape[1]), dtype=np.int32)
        w = np.empty((len(keys), self._w.shape[1]), dtype=np.float32)
        top[have], w[have] = self._top[known[have]], self._w[known[have]]
        for start in range(0, missing.size, self.chunk):
            rows_now = missing[start: start + self.chunk]
            top[rows_now], w[rows_now] = conse_weights(rows[rows_now].astype(np.float32), self.branch)
        self._row_of = {key: i for i, key in enumerate(keys)}
        self._top, self._w = top, w
        embedded = [_embed_weighted(top[i: i + self.chunk], w[i: i + self.chunk], self.branch)
                    for i in range(0, len(keys), self.chunk)]
        return np.concatenate(embedded) if embedded else np.zeros((0, self.branch.anchors.shape[1]), np.float32)

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The kept codes: each distinct row's digest (n, 16) uint8, classes (n, T) and weights (n, T)."""
        rows = np.fromiter(self._row_of.values(), dtype=np.int64, count=len(self._row_of))
        keys = np.frombuffer(b"".join(self._row_of), dtype=np.uint8).reshape(-1, _KEY_BYTES)
        return {"keys": keys, "top": self._top[rows], "w": self._w[rows]}

    def load_state_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Inverse of ``state_arrays``; ``ValueError`` naming what does not fit this branch."""
        keys, top, w = arrays["keys"], arrays["top"], arrays["w"]
        t, classes = self._top.shape[1], self.branch.fc_w.shape[1]
        n = keys.shape[0]
        if (keys.dtype != np.uint8 or keys.shape != (n, _KEY_BYTES) or top.shape != (n, t) or w.shape != (n, t)
                or not np.issubdtype(top.dtype, np.integer) or top.size and not 0 <= top.min() <= top.max() < classes
                or not np.isfinite(w).all()):
            raise ValueError(f"kept ConSE codes {keys.shape} / {top.shape} / {w.shape} do not fit a top-{t} "
                             f"branch over {classes} classes")
        self._row_of = {key.tobytes(): i for i, key in enumerate(keys)}
        self._top, self._w = top.astype(np.int32), w.astype(np.float32)
