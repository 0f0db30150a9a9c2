"""A dependency-free progress bar for long work (export, feature extraction, learning).

Written to stderr so stdout stays clean for ``--json`` output; redraws at most
a few times a second; silent when stderr is not a terminal unless forced, so
logs and CI output do not fill with carriage returns.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TextIO, TypeVar

T = TypeVar("T")


class Progress:
    """``with Progress(total, "extract") as bar: bar.update(n, loss=0.3)``."""

    def __init__(
        self,
        total: int | None,
        label: str,
        unit: str = "it",
        stream: TextIO | None = None,
        enabled: bool | None = None,
        min_interval: float = 0.25,
    ) -> None:
        self.total = total
        self.label = label
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.min_interval = min_interval
        self.count = 0
        self.start = time.monotonic()
        self._last_draw = 0.0
        self._fields: dict[str, object] = {}

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.start
        return self.count / elapsed if elapsed > 0 else 0.0

    def update(self, n: int = 1, **fields: object) -> None:
        self.count += n
        self._fields.update(fields)
        now = time.monotonic()
        if self.enabled and now - self._last_draw >= self.min_interval:
            self._last_draw = now
            self._draw()

    def _draw(self, end: str = "\r") -> None:
        extra = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in self._fields.items())
        if self.total:
            frac = min(1.0, self.count / self.total)
            bar = "#" * int(frac * 24)
            head = f"{self.label} [{bar:<24}] {self.count}/{self.total}"
        else:
            head = f"{self.label} {self.count}"
        self.stream.write(f"{head} {self.rate:.1f} {self.unit}/s {extra}".rstrip() + "\x1b[K" + end)
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(end="\n")

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def track(items: Iterable[T], total: int | None, label: str, unit: str = "it") -> Iterator[T]:
    """Iterate with a progress bar."""
    with Progress(total, label, unit) as bar:
        for item in items:
            yield item
            bar.update()
