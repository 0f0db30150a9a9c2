"""Continual-learning metrics as small objects: ``update`` / ``result`` / ``reset``.

The harness decides when to measure; these only do the arithmetic, so it can
be checked on hand-made numbers (tests/test_cl_metrics.py). Definitions, with
``R[t, j]`` the accuracy on the test set of task ``j`` after training on tasks
``0..t`` (``j <= t``; T tasks):

- final average accuracy: ``mean_j R[T-1, j]`` (Lopez-Paz & Ranzato 2017, "ACC");
  with tasks of equal size it equals the accuracy on every seen class's test images;
- average incremental accuracy: ``mean_t mean_{j<=t} R[t, j]`` (Rebuffi et al. 2017, iCaRL);
- forgetting: ``mean_{j<T-1} (max_{t<T-1} R[t, j] - R[T-1, j])`` (Chaudhry et al. 2018);
- accuracy after each task: ``mean_{j<=t} R[t, j]``, the curve that is plotted.
"""

from __future__ import annotations

import math
import time
import tracemalloc
from dataclasses import dataclass

import numpy as np


class Accuracy:
    """Running top-1 accuracy of predicted against true labels."""

    def __init__(self) -> None:
        self.correct = 0
        self.total = 0

    def update(self, predicted: np.ndarray, target: np.ndarray) -> None:
        predicted, target = np.asarray(predicted), np.asarray(target)
        if predicted.shape != target.shape:
            raise ValueError(f"{predicted.shape[0] if predicted.ndim else 0} predictions for "
                             f"{target.shape[0] if target.ndim else 0} targets")
        self.correct += int(np.count_nonzero(predicted == target))
        self.total += int(target.size)

    def result(self) -> float:
        """Fraction in [0, 1]; NaN before any update."""
        return self.correct / self.total if self.total else math.nan

    def reset(self) -> None:
        self.correct = self.total = 0


class AccuracyMatrix:
    """``R[t, j]`` for T tasks, filled one (after task, on task) cell at a time; unmeasured cells are NaN."""

    def __init__(self, n_tasks: int) -> None:
        if n_tasks < 1:
            raise ValueError(f"need at least one task, got {n_tasks}")
        self.n_tasks = n_tasks
        self.matrix = np.full((n_tasks, n_tasks), np.nan)

    def update(self, after_task: int, on_task: int, accuracy: float) -> None:
        if not 0 <= on_task <= after_task < self.n_tasks:
            raise ValueError(f"cell (after task {after_task}, on task {on_task}) is outside the lower triangle "
                             f"of a {self.n_tasks}-task matrix")
        self.matrix[after_task, on_task] = accuracy

    def reset(self) -> None:
        self.matrix[...] = np.nan

    def accuracy_after(self) -> list[float]:
        """``mean_{j<=t} R[t, j]`` for every t (NaN for a row not yet measured)."""
        return [_mean(self.matrix[t, : t + 1]) for t in range(self.n_tasks)]

    def final_average(self) -> float:
        return self.accuracy_after()[-1]

    def average_incremental(self) -> float:
        return _mean(np.array(self.accuracy_after()))

    def forgetting(self) -> float:
        """NaN with a single task (nothing to forget)."""
        last = self.n_tasks - 1
        if last == 0:
            return math.nan
        drops = [np.max(self.matrix[j:last, j]) - self.matrix[last, j] for j in range(last)]
        return _mean(np.array(drops))

    def result(self) -> dict[str, object]:
        return {
            "final_average": self.final_average(),
            "average_incremental": self.average_incremental(),
            "forgetting": self.forgetting(),
            "accuracy_after_task": self.accuracy_after(),
            "matrix": [[None if math.isnan(v) else float(v) for v in row] for row in self.matrix],
        }


def _mean(values: np.ndarray) -> float:
    """Mean that is NaN (not a warning) when any value is missing."""
    return float(np.mean(values)) if values.size and not np.isnan(values).any() else math.nan


@dataclass(frozen=True)
class ResourceUse:
    seconds: float  # wall time
    peak_bytes: int  # peak of memory allocated through Python/numpy while measuring (tracemalloc)


class ResourceMeter:
    """Wall time and peak traced allocation of the code run between ``start`` and ``stop``, summed over calls.

    tracemalloc sees every numpy array, so the peak covers a method's state,
    its buffers and its temporaries, not the shared cached features (allocated
    before the first ``start``, which sets the zero). Between spans (while the
    harness evaluates) nothing is counted.
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        self.peak_bytes = 0
        self._start: float | None = None
        self._base: int | None = None

    def start(self) -> None:
        if not tracemalloc.is_tracing():
            tracemalloc.start()
        if self._base is None:
            self._base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        self._start = time.perf_counter()

    def stop(self) -> None:
        if self._start is None or self._base is None:
            raise RuntimeError("ResourceMeter.stop() without start()")
        self.seconds += time.perf_counter() - self._start
        self.peak_bytes = max(self.peak_bytes, tracemalloc.get_traced_memory()[1] - self._base)
        self._start = None

    def result(self) -> ResourceUse:
        return ResourceUse(self.seconds, self.peak_bytes)

    def reset(self) -> None:
        self.seconds, self.peak_bytes, self._start, self._base = 0.0, 0, None, None
