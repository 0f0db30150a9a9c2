"""Latent replay: a class-balanced reservoir of backbone *features* (float16), not images.

Replaying a few stored examples of old concepts with every update is what
keeps a head trained on a stream from forgetting. Storing 1,280-d float16
features instead of frames costs 2.5 kB per example, so a few MB hold
thousands, and the frozen backbone never has to run twice on the same image.

Admission follows class-balanced reservoir sampling (Chrysakis & Moens 2020,
"Online continual learning from imbalanced data"): while there is room every
sample is stored; when full, a sample of a class that is not among the largest
in the buffer evicts a random sample of a largest class, and a sample of a
largest class replaces a random sample of its own class with probability
(slots held by the class) / (samples of the class seen), i.e. ordinary
reservoir sampling within the class. So a rare class keeps its examples, a
class seen for hours does not crowd the others out, and within a class the
kept examples are a uniform sample of its history rather than the latest ones.

The arrays are allocated once at full capacity so memory use is known up front
(the memory plan counts ``nbytes``) and constant while learning.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

BYTES_PER_VALUE = 2  # float16
_F16_MAX = float(np.finfo(np.float16).max)


@dataclass
class ReplayBatch:
    features: np.ndarray  # (m, F) float16
    labels: np.ndarray  # (m,) int64, the learner's known-concept indices
    slots: np.ndarray  # (m,) where each sample sits in the buffer, < capacity
    stamps: np.ndarray  # (m,) unique id of each stored sample: a slot's stamp changes when it is rewritten
    capacity: int  # of the buffer; with slots and stamps, lets a method cache per-sample values


def capacity_for_bytes(replay_bytes: int, feature_dim: int) -> int:
    """How many features fit in ``replay_bytes`` (the profile's ``replay_bytes``)."""
    return max(0, int(replay_bytes) // (feature_dim * BYTES_PER_VALUE))


class ReplayBuffer:
    """Fixed-capacity class-balanced reservoir of float16 features with integer labels."""

    def __init__(self, capacity: int, feature_dim: int, seed: int = 0) -> None:
        if capacity < 0 or feature_dim <= 0:
            raise ValueError(f"bad replay buffer geometry: capacity={capacity}, feature_dim={feature_dim}")
        self.feature_dim = feature_dim
        self.features = np.zeros((capacity, feature_dim), dtype=np.float16)
        self.labels = np.zeros(capacity, dtype=np.int64)
        self.stamps = np.zeros(capacity, dtype=np.int64)  # 0: never written
        self._next_stamp = 1
        self.size = 0
        self.held = np.zeros(0, dtype=np.int64)  # slots held per class
        self.seen = np.zeros(0, dtype=np.int64)  # samples offered per class
        self.rng = np.random.default_rng(seed)  # admission and eviction draws (checkpointed)

    @classmethod
    def from_bytes(cls, replay_bytes: int, feature_dim: int, seed: int = 0) -> ReplayBuffer:
        return cls(capacity_for_bytes(replay_bytes, feature_dim), feature_dim, seed)

    @property
    def capacity(self) -> int:
        return self.features.shape[0]

    @property
    def nbytes(self) -> int:
        return self.features.nbytes + self.labels.nbytes + self.stamps.nbytes

    @property
    def bytes_per_sample(self) -> int:
        """Feature, label and stamp bytes of one slot (``nbytes == capacity * bytes_per_sample``)."""
        return self.feature_dim * BYTES_PER_VALUE + self.labels.itemsize + self.stamps.itemsize

    def _ensure_class(self, label: int) -> None:
        if label >= self.held.size:
            grow = label + 1 - self.held.size
            self.held = np.concatenate([self.held, np.zeros(grow, dtype=np.int64)])
            self.seen = np.concatenate([self.seen, np.zeros(grow, dtype=np.int64)])

    def _random_slot_of(self, label: int) -> int:
        slots = np.flatnonzero(self.labels[: self.size] == label)
        return int(slots[self.rng.integers(slots.size)])

    def _random_largest_class(self) -> int:
        largest = np.flatnonzero(self.held == self.held.max())
        return int(largest[self.rng.integers(largest.size)])

    def _admit_slot(self, label: int) -> int | None:
        """Slot the new sample of ``label`` goes to, or None when the reservoir rejects it."""
        if self.size < self.capacity:
            self.size += 1
            return self.size - 1
        if self.held[label] < self.held.max():
            victim = self._random_largest_class()
        elif self.rng.random() * self.seen[label] < self.held[label]:
            victim = label
        else:
            return None
        self.held[victim] -= 1
        return self._random_slot_of(victim)

    def add(self, features: np.ndarray, labels: np.ndarray) -> None:
        """Offer samples (n, F) with labels (n,); features are stored as float16 (clipped to its range)."""
        if self.capacity == 0:
            return
        for row, label in zip(features, np.asarray(labels, dtype=np.int64), strict=True):
            label = int(label)
            if label < 0:
                raise ValueError(f"replay labels must be >= 0, got {label}")
            self._ensure_class(label)
            self.seen[label] += 1
            slot = self._admit_slot(label)
            if slot is None:
                continue
            np.clip(row, -_F16_MAX, _F16_MAX, out=self.features[slot], casting="unsafe")
            self.labels[slot] = label
            self.stamps[slot] = self._next_stamp
            self._next_stamp += 1
            self.held[label] += 1

    def sample(self, n: int, rng: np.random.Generator) -> ReplayBatch | None:
        """Up to ``n`` distinct stored samples drawn uniformly (the buffer itself is class-balanced)."""
        if self.size == 0 or n <= 0:
            return None
        idx = rng.choice(self.size, size=n, replace=False) if n < self.size else np.arange(self.size)
        return ReplayBatch(self.features[idx], self.labels[idx], idx, self.stamps[idx], self.capacity)

    def shrink(self, new_bytes: int) -> int:
        """Reduce capacity to fit ``new_bytes`` (memory pressure), evicting from the largest classes.

        Returns the new capacity. The arrays are reallocated smaller so the
        memory really goes back to the OS.
        """
        new_capacity = capacity_for_bytes(new_bytes, self.feature_dim)
        if new_capacity >= self.capacity:
            return self.capacity
        keep_per_class = self.held.copy()
        for _ in range(max(0, self.size - new_capacity)):
            largest = np.flatnonzero(keep_per_class == keep_per_class.max())
            keep_per_class[largest[self.rng.integers(largest.size)]] -= 1
        kept = [
            self.rng.choice(np.flatnonzero(self.labels[: self.size] == label), size=count, replace=False)
            for label, count in enumerate(keep_per_class)
            if count > 0
        ]
        keep = np.sort(np.concatenate(kept)) if kept else np.zeros(0, dtype=np.int64)
        features = np.zeros((new_capacity, self.feature_dim), dtype=np.float16)
        labels = np.zeros(new_capacity, dtype=np.int64)
        stamps = np.zeros(new_capacity, dtype=np.int64)
        features[: keep.size] = self.features[keep]
        labels[: keep.size] = self.labels[keep]
        stamps[: keep.size] = self.stamps[keep]
        self.features, self.labels, self.stamps = features, labels, stamps
        self.size, self.held = int(keep.size), keep_per_class
        return new_capacity

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Stored samples and per-class counts (views; the empty tail is not saved)."""
        return {
            "features": self.features[: self.size],
            "labels": self.labels[: self.size],
            "seen": self.seen,
        }

    @classmethod
    def from_state_arrays(
        cls, arrays: Mapping[str, np.ndarray], capacity: int, feature_dim: int, seed: int = 0
    ) -> ReplayBuffer:
        """Rebuild a buffer of ``capacity`` (the current profile's) from ``state_arrays()``.

        A smaller capacity than the saved one evicts as ``shrink`` does.
        ``ValueError`` (or ``KeyError``) when the arrays are missing or inconsistent.
        """
        features, labels, seen = arrays["features"], arrays["labels"], arrays["seen"]
        if features.ndim != 2 or features.shape[1] != feature_dim or labels.shape != (features.shape[0],):
            raise ValueError(f"replay features {features.shape} / labels {labels.shape} do not fit dim {feature_dim}")
        if seen.ndim != 1 or (labels.size and (labels.min() < 0 or labels.max() >= seen.size)):
            raise ValueError("replay labels outside the recorded classes")
        # add() stores finite float16 only; one NaN/Inf would stall every later update.
        if features.dtype != np.float16 or not np.isfinite(features).all():
            raise ValueError(f"replay features must be finite float16 values (got {features.dtype})")
        held = np.bincount(labels, minlength=seen.size).astype(np.int64)
        if np.any(held > seen):
            raise ValueError("replay holds more samples of a class than were ever seen")
        buffer = cls(max(capacity, features.shape[0]), feature_dim, seed)
        buffer.features[: features.shape[0]] = features
        buffer.labels[: labels.size] = labels
        buffer.stamps[: labels.size] = np.arange(1, labels.size + 1)
        buffer._next_stamp = labels.size + 1
        buffer.size = int(labels.size)
        buffer.held, buffer.seen = held, seen.astype(np.int64)
        buffer.shrink(capacity * feature_dim * BYTES_PER_VALUE)
        return buffer


class SampleCache:
    """Per-sample values derived from replay features (e.g. the frozen ConSE embedding), by slot.

    A value is computed the first time its sample is replayed and reused until
    the slot holds another sample (its stamp changes), so a constant
    function of a stored feature is not recomputed at every update.
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.values = np.zeros((0, dim), dtype=np.float32)
        self.stamps = np.zeros(0, dtype=np.int64)

    @staticmethod
    def nbytes_for(capacity: int, dim: int) -> int:
        return capacity * (dim * 4 + 8)

    @property
    def nbytes(self) -> int:
        return self.values.nbytes + self.stamps.nbytes

    def clear(self) -> None:
        self.values = np.zeros((0, self.dim), dtype=np.float32)
        self.stamps = np.zeros(0, dtype=np.int64)

    def lookup(self, batch: ReplayBatch, compute: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """(m, dim) values for the batch; ``compute`` maps float32 features (k, F) to (k, dim) for the misses."""
        if self.stamps.size != batch.capacity:  # first use, or the buffer was shrunk: slots moved
            self.values = np.zeros((batch.capacity, self.dim), dtype=np.float32)
            self.stamps = np.zeros(batch.capacity, dtype=np.int64)
        # Row by row: a BLAS product's rounding can depend on how many rows it gets, and a value must not
        # depend on which other samples missed with it (a resumed learner has to reproduce it exactly).
        for i in np.flatnonzero(self.stamps[batch.slots] != batch.stamps):
            slot = batch.slots[i]
            self.values[slot] = compute(batch.features[i : i + 1].astype(np.float32))[0]
            self.stamps[slot] = batch.stamps[i]
        return self.values[batch.slots]

