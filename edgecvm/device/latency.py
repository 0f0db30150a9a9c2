"""How fresh the answers are: the time from a live frame's arrival to its answer, as p50/p95.

A live source (a camera, a video played in real time) stamps each frame with
``time.monotonic()`` when it arrived (``Frame.arrived``); whoever answers the
frame asks ``AnswerLatency.answered`` how long ago that was. A robot acting
on an answer needs this figure for its own camera and board, not the
bench's, so ``predict``, ``serve`` and the bench report it alike.

The figures go into a histogram with logarithmic bins (1 % wide, 0.1 ms to
100 s) instead of a list: a camera answered for a day is millions of frames,
and the memory this takes must not grow with them. A percentile is its bin's
upper edge, so it is at most 1 % above the exact one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from edgecvm.device.streams import Frame

_LOWEST_S = 1e-4  # everything faster lands in the first bin
_RATIO = 1.01  # each bin 1 % wider than the one before
_BINS = math.ceil(math.log(100.0 / _LOWEST_S) / math.log(_RATIO)) + 1  # up to 100 s; the last bin holds all slower


class AnswerLatency:
    """Arrival-to-answer seconds of the live frames answered; a file's frames have no arrival and are not counted.

    ``clock``: what ``time.monotonic()`` is to the source (a test passes a fake one)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._counts = np.zeros(_BINS, dtype=np.int64)  # 1.4 k bins: 11 KB

    @property
    def frames(self) -> int:
        return int(self._counts.sum())

    def answered(self, frame: Frame) -> float | None:
        """Count ``frame`` as answered now; its latency in seconds, None for a frame no live source stamped."""
        if frame.arrived is None:
            return None
        seconds = max(self._clock() - frame.arrived, 0.0)
        self._counts[_bin(seconds)] += 1
        return seconds

    def summary(self) -> dict[str, float | int | None]:
        """Frames counted and their p50/p95 in milliseconds (None before the first)."""
        return {"frames": self.frames, "p50_ms": self._percentile_ms(50), "p95_ms": self._percentile_ms(95)}

    def _percentile_ms(self, q: float) -> float | None:
        total = self.frames
        if not total:
            return None
        index = int(np.searchsorted(np.cumsum(self._counts), math.ceil(total * q / 100)))
        return round(_LOWEST_S * _RATIO**index * 1000, 2)


def _bin(seconds: float) -> int:
    if seconds <= _LOWEST_S:
        return 0
    return min(math.ceil(math.log(seconds / _LOWEST_S) / math.log(_RATIO)), _BINS - 1)
