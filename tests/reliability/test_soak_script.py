"""`make soak`'s script, run short: the real `learn` loop with the synthetic stream and backbone, end to end.

The 100,000-frame run is a `make soak` target, not a test; this keeps the script itself from rotting (it swaps
in a stand-in for the backbone, which has to follow the real one's interface).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from harness import REPO


def test_short_soak_runs_the_learn_loop_and_reports_rss_parts(rel_bundle: Path) -> None:
    run = subprocess.run([sys.executable, str(REPO / "tests" / "reliability" / "soak.py"), "--bundle", str(rel_bundle),
                          "--frames", "1200", "--warmup", "600", "--concepts", "5", "--checkpoint-every", "400",
                          "--max-growth", "1.0"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert (report["frames"], report["concepts"], report["ok"]) == (1200, 5, True)
    assert [report["rss"][k]["frame"] for k in ("start", "middle", "end")] == [600, 900, 1200]
    if sys.platform.startswith("linux"):
        end = report["rss"]["end"]
        assert end["anon_mb"] > 0 and end["file_mb"] > 0
        assert abs(end["anon_mb"] + end["file_mb"] - end["rss_mb"]) < 2  # the two parts make up the RSS (+ shmem)
    assert "learned from 1200 frames" in run.stdout and "1200 updates" in run.stdout
