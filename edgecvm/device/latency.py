"""How fresh the answers are: the time from a live frame's arrival to its answer, as p50/p95.

A live source (a camera, a video played in real time) stamps each frame with
``time.monotonic()`` when it arrived; whoever answers it adds
``frame.age_s()`` here. A robot acting on an answer needs this figure for
its own camera and board, not the bench's, so ``predict``, ``serve`` and the
bench report it alike.

The figures go into a histogram with logarithmic bins (1 % wide, 0.1 ms to
100 s) instead of a list: a camera answered for a day is millions of frames,
and the memory this takes must not grow with them. A percentile is its bin's
upper edge, so it is at most 1 % above the exact one.
"""

from __future__ import annotations

import math

import numpy as np

_LOWEST_S = 1e-4  # everything faster lands in the first bin
_HIGHEST_S = 100.0  # everything slower lands in the last bin
_RATIO = 1.01  # each bin 1 % wider than the one before
_BINS = math.ceil(math.log(_HIGHEST_S / _LOWEST_S) / math.log(_RATIO)) + 1


class AnswerLatency:
    """Arrival-to-answer seconds of the live frames answered, summed up as p50/p95 in constant memory."""

    def __init__(self) -> None:
        self._counts = np.zeros(_BINS, dtype=np.int64)  # 1.4 k bins: 11 KB

    @property
    def frames(self) -> int:
        return int(self._counts.sum())

    def add(self, seconds: float) -> None:
        """One answer, ``seconds`` after its frame arrived."""
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"an answer's latency must be a finite number of seconds >= 0, got {seconds!r}")
        self._counts[_bin(seconds)] += 1

    def summary(self) -> dict[str, float | int | None]:
        """Answers counted and their p50/p95 in milliseconds (None before the first)."""
        cumulative = np.cumsum(self._counts)
        total = int(cumulative[-1])

        def percentile_ms(q: float) -> float | None:
            if not total:
                return None
            index = int(np.searchsorted(cumulative, math.ceil(total * q / 100)))
            return round(_LOWEST_S * _RATIO**index * 1000, 2)

        return {"frames": total, "p50_ms": percentile_ms(50), "p95_ms": percentile_ms(95)}


def _bin(seconds: float) -> int:
    if seconds <= _LOWEST_S:
        return 0
    return min(math.ceil(math.log(min(seconds, _HIGHEST_S) / _LOWEST_S) / math.log(_RATIO)), _BINS - 1)
