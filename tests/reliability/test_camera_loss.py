"""Camera loss during `edgecvm learn`: reopen with backoff, give up after --reconnect-timeout with exit 4.

The camera is ``fake_camera.FlakyCamera`` in place of OpenCV's: it delivers
frames, then fails mid-stream. If it comes back within the timeout, learning
resumes; if not, `learn` checkpoints what it learned, prints one error line
and exits with code 4, within about the timeout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from fake_camera import FlakyCamera
from faults import one_line_error
from harness import REPO

import edgecvm.device.streams
from edgecvm.cli import main

FAKE_CAMERA = Path(__file__).with_name("fake_camera.py")


def _learn_args(bundle, profile, state, *extra: str) -> list[str]:
    return ["learn", "--bundle", str(bundle), "--stream", "camera0", "--label", "goldfish", "--state", str(state),
            "--profile", str(profile), "--checkpoint-every", "1000", "--json", *extra]


def test_camera_that_never_comes_back_exits_4_after_checkpointing(
    rel_bundle, rel_profile, device_parts, tmp_path, monkeypatch, capsys
):
    camera = FlakyCamera(fail_after=25, down_s=None)
    monkeypatch.setattr(edgecvm.device.streams, "opencv_opener", camera.open)
    state = tmp_path / "state"
    started = time.monotonic()
    rc = main(_learn_args(rel_bundle, rel_profile, state, "--reconnect-timeout", "1.5"))
    elapsed = time.monotonic() - started
    out, err = capsys.readouterr()

    assert rc == 4
    line = one_line_error(err)
    assert "camera0" in line and "camera lost" in line and "--reconnect-timeout" in line
    summary = json.loads(out.splitlines()[-1])
    assert summary["interrupted_by"] == "stream lost"
    assert 1 <= summary["updates_total"] <= 25  # the reader keeps the newest frame only: some may be dropped
    # Checkpointed before the exit: the state on disk holds every update made (no interval lost).
    assert summary["saved_update"] == summary["updates_total"]
    assert device_parts.load(state).counters.updates == summary["updates_total"]
    assert camera.opens == 1 and elapsed < 1.5 + 8  # gave up after ~the timeout, not hanging


def test_camera_that_comes_back_is_reopened_and_learning_goes_on(
    rel_bundle, rel_profile, device_parts, tmp_path, monkeypatch, capsys, caplog
):
    camera = FlakyCamera(fail_after=15, down_s=0.6)
    monkeypatch.setattr(edgecvm.device.streams, "opencv_opener", camera.open)
    state = tmp_path / "state"
    rc = main(_learn_args(rel_bundle, rel_profile, state, "--reconnect-timeout", "10", "--limit", "30"))
    out, err = capsys.readouterr()

    assert rc == 0, err
    summary = json.loads(out.splitlines()[-1])
    assert summary["updates_total"] == 30 and summary["interrupted_by"] is None
    assert camera.opens >= 2 and camera.delivered > 15  # frames after the outage were learned too
    messages = [r.getMessage() for r in caplog.records]
    assert any("reopening" in m for m in messages) and any("camera is back" in m for m in messages)
    learner = device_parts.load(state)
    assert learner.counters.updates == 30
    assert all(np.isfinite(v).all() for v in learner.method.state_arrays().values())


@pytest.mark.parametrize("timeout_s", [0.0, 1.0])
def test_lost_camera_in_a_real_process_is_one_line_and_exit_4(rel_bundle, rel_profile, tmp_path, timeout_s):
    done = subprocess.run(
        [sys.executable, str(FAKE_CAMERA), *_learn_args(rel_bundle, rel_profile, tmp_path / "state",
                                                       "--reconnect-timeout", str(timeout_s))],
        capture_output=True, text=True, cwd=REPO, timeout=120,
        env={**os.environ, "FAIL_AFTER": "10", "PYTHONPATH": str(Path(__file__).parent)},
    )
    assert done.returncode == 4, done.stderr
    assert "camera lost" in one_line_error(done.stderr)
    summary = json.loads(done.stdout.splitlines()[-1])
    assert summary["saved_update"] == summary["updates_total"] >= 1
