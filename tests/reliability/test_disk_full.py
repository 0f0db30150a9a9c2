"""Disk full / read-only card at checkpoint time: learning goes on in memory, the disk keeps the last good state.

Two ways to fail a write. Monkeypatched system calls (ENOSPC from write or
fsync, EROFS from creating the temp file) run everywhere. Where the test may
mount file systems (root in a container or VM), a real 1 MB tmpfs is filled
to the last byte, then remounted read-only, so the kernel itself refuses.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from faults import raise_oserror
from harness import SAMPLES
from synthetic_data import CONCEPTS, Clusters, anchor_set, head_params

import edgecvm.formats.integrity
from edgecvm.device.state import Checkpointer, StateIdentity, load_state, state_path
from edgecvm.learning.learner import Learner, LearnerConfig

IDENTITY = StateIdentity(bundle_sha256="b" * 64, anchors_sha256="a" * 64)
CONFIG = LearnerConfig(replay_bytes=32 * 32 * 2, batch_size=4)
CLUSTERS = Clusters(4, feature_dim=32, seed=3)


def _teach(learner: Learner, steps: int) -> None:
    for i in range(steps):
        learner.observe_features(CLUSTERS.draw(np.array([i % 4])), [CONCEPTS[i % 4]])


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _failing_write(code: int):
    """An ``os.fdopen`` whose files write half of what they are given, then fail like a full disk."""
    real_fdopen = os.fdopen

    class HalfWriter:
        def __init__(self, fh) -> None:
            self.fh = fh

        def write(self, data: bytes) -> int:
            self.fh.write(data[: len(data) // 2])
            self.fh.flush()
            raise OSError(code, os.strerror(code))

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.fh.close()

    return lambda fd, *args, **kwargs: HalfWriter(real_fdopen(fd, *args, **kwargs))


FAULTS = {
    "ENOSPC-write": ("os.fdopen", lambda: _failing_write(errno.ENOSPC)),
    "ENOSPC-fsync": ("os.fsync", lambda: raise_oserror(errno.ENOSPC)),
    "EROFS-create": ("os.open", lambda: raise_oserror(errno.EROFS)),
    "EIO-write": ("os.fdopen", lambda: _failing_write(errno.EIO)),
}


def _run_with_failing_checkpoints(folder: Path, fail, caplog) -> None:
    """Two good checkpoints, then ``fail`` breaks the disk for two checkpoints, then the disk recovers.

    ``fail`` is a context manager that makes writes under ``folder`` fail.
    """
    learner = Learner(head_params(), anchor_set(), CONFIG)
    ckpt = Checkpointer(folder, learner, IDENTITY, every=5)
    _teach(learner, 10)
    assert ckpt.checkpoint() and ckpt.checkpoint() is True
    before = _snapshot(folder)
    saved_updates = learner.counters.updates

    with fail(), caplog.at_level(logging.WARNING):
        for _ in range(2):
            _teach(learner, 5)
            assert ckpt.maybe_checkpoint() is False
    assert ckpt.failed == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2 and all("CHECKPOINT FAILED" in w and "IN MEMORY" in w for w in warnings)
    # Learning went on in memory...
    assert learner.counters.updates == saved_updates + 10
    # ...and the disk still holds exactly the last good checkpoint (no temp files left behind).
    assert _snapshot(folder) == before
    assert load_state(folder, head_params(), anchor_set(), IDENTITY, CONFIG).counters.updates == saved_updates

    # Space comes back: the next checkpoint saves everything learned in memory meanwhile.
    _teach(learner, 5)
    assert ckpt.maybe_checkpoint() is True
    resumed = load_state(folder, head_params(), anchor_set(), IDENTITY, CONFIG)
    assert resumed.counters.updates == learner.counters.updates == saved_updates + 15
    probe = CLUSTERS.draw(np.arange(8) % 4)
    np.testing.assert_array_equal(resumed.method.embed(probe), learner.method.embed(probe))


@pytest.mark.parametrize("fault", list(FAULTS))
def test_failed_checkpoint_keeps_learning_and_the_disk_intact(tmp_path, monkeypatch, caplog, fault):
    target, make = FAULTS[fault]
    module_name, attr = target.split(".")
    module = getattr(edgecvm.formats.integrity, module_name)

    @contextlib.contextmanager
    def fail():
        with monkeypatch.context() as patch:
            patch.setattr(module, attr, make())
            yield

    _run_with_failing_checkpoints(tmp_path / "state", fail, caplog)


# --- a real, tiny file system --------------------------------------------------------------------

@pytest.fixture()
def tiny_fs():
    """A 1 MB tmpfs, unmounted afterwards; skipped where mounting is not allowed."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount_point = Path(tempfile.mkdtemp(prefix="edgecvm-tinyfs-"))
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        mount_point.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)
        mount_point.rmdir()


def test_real_full_disk(tiny_fs, caplog):
    filler = tiny_fs / "filler"

    @contextlib.contextmanager
    def fill_disk():
        with open(filler, "wb", buffering=0) as fh, contextlib.suppress(OSError):
            while True:  # until the kernel says the card is full
                fh.write(b"\1" * 4096)
        assert (tiny_fs / "state" / "state.npz").stat().st_size > 4096  # a checkpoint cannot fit any more
        yield
        filler.unlink()

    _run_with_failing_checkpoints(tiny_fs / "state", fill_disk, caplog)


def test_real_read_only_remount(tiny_fs, caplog):
    @contextlib.contextmanager
    def read_only():
        subprocess.run(["mount", "-o", "remount,ro", str(tiny_fs)], check=True)
        try:
            yield
        finally:
            subprocess.run(["mount", "-o", "remount,rw", str(tiny_fs)], check=True)

    _run_with_failing_checkpoints(tiny_fs / "state", read_only, caplog)
    assert state_path(tiny_fs / "state").exists()


def test_learn_command_on_a_full_card_keeps_learning_and_says_so(
    rel_bundle, rel_profile, device_parts, tmp_path, monkeypatch, capsys, caplog
):
    from edgecvm.cli import main

    state = tmp_path / "state"
    args = ["learn", "--bundle", str(rel_bundle), "--stream", str(SAMPLES / "train"), "--shuffle", "4", "--state",
            str(state), "--profile", str(rel_profile), "--checkpoint-every", "5", "--json"]
    assert main([*args, "--limit", "10"]) == 0
    capsys.readouterr()
    before = _snapshot(state)

    monkeypatch.setattr(edgecvm.formats.integrity, "_create_temp", raise_oserror(errno.ENOSPC))
    with caplog.at_level(logging.WARNING):
        main([*args, "--limit", "20"])
    out, _err = capsys.readouterr()
    summary = json.loads(out.splitlines()[-1])
    assert summary["updates"] == 20  # every frame was learned, in memory
    assert summary["checkpoints"] == 0 and summary["checkpoint_failures"] >= 4
    assert summary["saved_update"] is None  # and the summary says nothing of this run reached the card
    failed = [r for r in caplog.records if "CHECKPOINT FAILED" in r.getMessage()]
    assert len(failed) == summary["checkpoint_failures"]
    assert _snapshot(state) == before  # the last good state is untouched
    assert device_parts.load(state).counters.updates == 10
