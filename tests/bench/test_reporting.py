"""Library code reports progress through a factory: the silent default and the CLI's terminal bar both fit it."""

from __future__ import annotations

from edgecvm.cli.progress import Progress
from edgecvm.reporting import ProgressBar, no_log, silent


def test_the_silent_default_and_the_terminal_bar_are_both_progress_factories(capsys):
    bars: list[ProgressBar] = [silent(3, "label", "img"), Progress(3, "label", "img", enabled=False)]
    for bar in bars:
        with bar as entered:
            entered.update(2, loss=0.5)
            entered.update()
        assert bar.count == 3  # type: ignore[attr-defined]
    no_log("dropped")
    assert capsys.readouterr() == ("", "")
