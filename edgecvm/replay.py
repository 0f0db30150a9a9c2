"""Latent replay: a class-balanced reservoir of past *features*, not images.

Storing 1,280-d float16 features costs 2.5 kB a sample (a 64 px JPEG is
~2 kB but would have to go through the backbone again), so a 5 MB budget
replays 2,000 past examples. When full, a new sample evicts one from the
class holding the most, so a concept taught early keeps its share; within a
class, reservoir sampling keeps a uniform sample of everything seen.
"""

from __future__ import annotations

import numpy as np


class ReplayBuffer:
    def __init__(self, feature_dim: int, capacity_bytes: int) -> None:
        self.feature_dim = feature_dim
        self.capacity = max(0, capacity_bytes // (feature_dim * 2))
        self.features = np.zeros((self.capacity, feature_dim), dtype=np.float16)
        self.labels = np.zeros(self.capacity, dtype=np.int64)
        self.size = 0
        self.seen: dict[int, int] = {}  # label -> samples offered, for per-class reservoir odds

    def __len__(self) -> int:
        return self.size

    @property
    def nbytes(self) -> int:
        return self.features.nbytes + self.labels.nbytes

    def class_counts(self) -> dict[int, int]:
        labels, counts = np.unique(self.labels[: self.size], return_counts=True)
        return {int(k): int(c) for k, c in zip(labels, counts, strict=True)}

    def add(self, feature: np.ndarray, label: int, rng: np.random.Generator) -> None:
        self.seen[label] = self.seen.get(label, 0) + 1
        if self.capacity == 0:
            return
        if self.size < self.capacity:
            slot = self.size
            self.size += 1
        else:
            counts = self.class_counts()
            largest = max(counts, key=lambda k: (counts[k], k))
            own = counts.get(label, 0)
            if own < counts[largest]:
                slot = self._random_slot_of(largest, rng)
            elif rng.random() < own / self.seen[label]:
                slot = self._random_slot_of(label, rng)
            else:
                return
        self.features[slot] = feature
        self.labels[slot] = label

    def _random_slot_of(self, label: int, rng: np.random.Generator) -> int:
        slots = np.flatnonzero(self.labels[: self.size] == label)
        return int(slots[rng.integers(len(slots))])

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``n`` stored features (float32) and labels, without replacement."""
        n = min(n, self.size)
        idx = rng.choice(self.size, size=n, replace=False) if n else np.zeros(0, dtype=np.int64)
        return self.features[idx].astype(np.float32), self.labels[idx]

    def shrink(self, capacity_bytes: int, rng: np.random.Generator) -> None:
        """Lower the capacity (memory pressure), keeping classes balanced."""
        new_cap = max(0, capacity_bytes // (self.feature_dim * 2))
        if new_cap >= self.capacity:
            return
        keep: list[int] = []
        labels = self.labels[: self.size]
        by_class = {int(c): list(rng.permutation(np.flatnonzero(labels == c))) for c in np.unique(labels)}
        while len(keep) < min(new_cap, self.size):  # round-robin over classes = balanced
            for slots in by_class.values():
                if slots and len(keep) < new_cap:
                    keep.append(int(slots.pop()))
        idx = np.array(sorted(keep), dtype=np.int64)
        features = np.zeros((new_cap, self.feature_dim), dtype=np.float16)
        labels_out = np.zeros(new_cap, dtype=np.int64)
        features[: len(idx)] = self.features[idx]
        labels_out[: len(idx)] = self.labels[idx]
        self.features, self.labels, self.size, self.capacity = features, labels_out, len(idx), new_cap

    def state_arrays(self) -> dict[str, np.ndarray]:
        seen = np.array(sorted(self.seen.items()), dtype=np.int64).reshape(-1, 2)
        return {"features": self.features[: self.size], "labels": self.labels[: self.size], "seen": seen,
                "capacity": np.array(self.capacity, dtype=np.int64)}

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        n = len(arrays["labels"])
        self.capacity = max(int(arrays["capacity"]), n)
        self.features = np.zeros((self.capacity, self.feature_dim), dtype=np.float16)
        self.labels = np.zeros(self.capacity, dtype=np.int64)
        self.features[:n] = arrays["features"]
        self.labels[:n] = arrays["labels"]
        self.size = n
        self.seen = {int(k): int(v) for k, v in arrays["seen"]}
