"""Optional coverage-guided fuzzing with atheris (skipped where atheris is not installed).

Runs ``atheris_fuzz.py`` in a subprocess for a fixed number of inputs
(``EDGECVM_ATHERIS_RUNS``, 3,000 in ``make test``, more in ``make soak``); a
loader raising anything but ``EdgeCVMError`` makes libFuzzer stop with a
non-zero exit and print the crashing input.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris")

TARGET = Path(__file__).with_name("atheris_fuzz.py")
REPO = Path(__file__).resolve().parents[2]


def test_loaders_survive_coverage_guided_fuzzing(tmp_path):
    runs = int(os.environ.get("EDGECVM_ATHERIS_RUNS", "3000"))
    done = subprocess.run(
        [sys.executable, str(TARGET), f"-runs={runs}", "-rss_limit_mb=2048", f"-artifact_prefix={tmp_path}/"],
        capture_output=True, text=True, cwd=REPO, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    finished = re.search(r"Done (\d+) runs", done.stderr)
    assert finished and int(finished.group(1)) >= runs, done.stderr[-2000:]
