"""Running `edgecvm learn` / `edgecvm predict` from tests: in-process, or as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from edgecvm.cli import main
from edgecvm.device.profiles import PROFILE_DIR
from edgecvm.device.state import STATE_FORMAT, STATE_VERSION, state_path
from edgecvm.formats.integrity import load_container

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def records(self) -> list[dict]:
        """stdout as JSON lines (every line must parse)."""
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    @property
    def summary(self) -> dict:
        (summary,) = [r for r in self.records if r["event"] == "summary"]
        return summary


def run_cli(capsys: pytest.CaptureFixture[str], *args: object) -> Run:
    """The command in this process (fast: the imports are already paid for)."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return Run(code, out, err)


def edgecvm_command(*args: object) -> list[str]:
    return [sys.executable, "-m", "edgecvm", *map(str, args)]


def run_subprocess(*args: object, timeout: float = 300) -> Run:
    done = subprocess.run(edgecvm_command(*args), capture_output=True, text=True, cwd=REPO, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return Run(done.returncode, done.stdout, done.stderr)


def write_profile(folder: Path, name: str = "test-host", **changes: object) -> Path:
    """The host profile with ``changes``; tests use the CPU arena (3x faster backbone, same features)."""
    data = yaml.safe_load((PROFILE_DIR / "host.yaml").read_text())
    data.update({"ort_cpu_arena": True, **changes})
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def saved_updates(state_dir: Path) -> int:
    """Update counter of the latest checkpoint file (its checksum verified)."""
    _, meta = load_container(state_path(state_dir), STATE_FORMAT, (STATE_VERSION,), "test")
    return int(meta["counters"]["updates"])
