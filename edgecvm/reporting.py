"""How library code reports progress without printing: the caller hands in a progress factory.

Long library functions (feature extraction, the evaluation harness, the
benchmark's stage timings, int8 calibration) take a ``progress`` argument
and call ``progress(total, label, unit)`` to get a bar they ``update``. The
command line passes ``edgecvm.cli.progress.Progress`` (a bar on stderr);
everything else gets ``silent``, so importing and calling the library never
writes to the terminal and never imports the CLI layer. Standard library only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class ProgressBar(Protocol):
    """``with factory(total, label, unit) as bar: bar.update(n, loss=0.3)``."""

    def update(self, n: int = 1, **fields: object) -> None:
        """``n`` more items done; ``fields`` are shown next to the count (e.g. a loss)."""
        ...

    def __enter__(self) -> ProgressBar: ...

    def __exit__(self, *exc: object) -> None: ...


# (total or None when unknown, label, unit) -> a bar
ProgressFactory = Callable[[int | None, str, str], ProgressBar]


class SilentProgress:
    """A bar that counts and shows nothing: the default wherever a caller gives none."""

    def __init__(self, total: int | None = None, label: str = "", unit: str = "it") -> None:
        self.total, self.label, self.unit = total, label, unit
        self.count = 0

    def update(self, n: int = 1, **fields: object) -> None:
        self.count += n

    def __enter__(self) -> SilentProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def silent(total: int | None, label: str, unit: str = "it") -> ProgressBar:
    """The default ``ProgressFactory``: reports nothing."""
    return SilentProgress(total, label, unit)


def no_log(message: str) -> None:
    """The default ``log`` callback of library functions that narrate their steps: drops the message."""
