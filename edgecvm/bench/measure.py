"""What `edgecvm bench` measures, and how: per-stage timings in process, whole runs in child processes.

* **Stages** run in the bench process, one frame at a time, each timed on its
  own: decode + preprocess, backbone, head predict, head update (with its
  replay minibatch). The update runs in line here (in `learn` it overlaps the
  next backbone run on the update thread), so its cost is visible.
* **Runs** are the real commands, ``python -m edgecvm predict|learn``, in a
  child process each, on the same frames: frames/s come from their own
  summaries, peak RSS from the kernel (``os.wait4``: the child's own
  ``ru_maxrss``, not a maximum over other children; see ``_LAUNCHER`` for
  why a small launcher sits in between), cold start is
  the time from spawning ``predict`` to its first frame line on stdout.
* Frames are written once to a manifest (``path,label`` CSV): a labelled file
  source, shuffled with a fixed seed (concepts interleave, so the head's
  update discriminates several concepts from the start) and repeated up to
  ``--frames``. Every measurement reads the same list.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecvm.device.device import Device
from edgecvm.device.memory_plan import MB
from edgecvm.device.streams import FileStream, open_stream
from edgecvm.errors import BadInputError
from edgecvm.reporting import ProgressFactory, silent

WARMUP_FRAMES = 3  # first frames fill ORT's caches and the replay buffer; not in the percentiles
STAGES = ("decode_preprocess", "backbone", "head_predict", "head_update")


def write_frame_manifest(source: str, frames: int, out: Path) -> Path:
    """``frames`` labelled images of ``source`` (shuffled, seed 0, repeated as needed) as a CSV manifest."""
    with open_stream(source, shuffle=0) as stream:
        if not isinstance(stream, FileStream) or not stream.labels:
            raise BadInputError(f"--stream {source}: bench needs a labelled file source (a folder of class "
                                "sub-folders, a zip of them, or a path,label manifest)")
        items = [item for item in stream.items if item.label is not None]
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label"])
        for i in range(frames):
            item = items[i % len(items)]
            writer.writerow([os.path.abspath(item.origin), item.label])  # a manifest resolves paths from its folder
    return out


def percentiles(samples_s: Sequence[float]) -> dict[str, float | None]:
    """p50/p95 in milliseconds (None without samples)."""
    if not samples_s:
        return {"p50_ms": None, "p95_ms": None}
    ms = np.asarray(samples_s) * 1000.0
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p95_ms": round(float(np.percentile(ms, 95)), 2)}


def time_stages(device: Device, manifest: Path, label: str,
                progress: ProgressFactory = silent) -> dict[str, dict[str, float | None]]:
    """Per-stage latency over the manifest's frames with an opened device (fresh learning state)."""
    extractor, learner = device.extractor, device.learner
    times: dict[str, list[float]] = {stage: [] for stage in STAGES}
    with open_stream(str(manifest)) as stream, progress(stream.total, f"bench {label}: stages", "frames") as bar:
        frames = iter(stream)
        for i in range(stream.total or 0):
            t0 = time.perf_counter()
            frame = next(frames)
            if frame.image is None:
                bar.update(1)
                continue
            batch = extractor.preprocess.batch([frame.image])
            t1 = time.perf_counter()
            features = extractor.run(batch)
            t2 = time.perf_counter()
            learner.observe_features(features, [frame.label or ""])  # first: a head with no data may not predict
            t3 = time.perf_counter()
            learner.predict_features(features, top_k=5, vocab="all")
            t4 = time.perf_counter()
            if i >= WARMUP_FRAMES:
                for stage, seconds in zip(STAGES, (t1 - t0, t2 - t1, t4 - t3, t3 - t2), strict=True):
                    times[stage].append(seconds)
            bar.update(1)
    return {stage: percentiles(samples) for stage, samples in times.items()}


@dataclass(frozen=True)
class ChildRun:
    """One finished child process: exit code, stdout lines, stderr tail, the kernel's peak RSS for it."""

    code: int
    lines: list[str]
    stderr: str
    peak_rss_mb: float
    wall_s: float
    first_match_s: float | None  # seconds from spawn to the first stdout line containing the marker

    def error(self) -> str:
        """The child's last stderr line (its one-line error), for the report."""
        tail = [line for line in self.stderr.splitlines() if line.strip()]
        return tail[-1] if tail else f"exit code {self.code}"


# Run by a fresh, small interpreter between the bench and the measured command. Linux copies the
# spawning process's peak RSS into the child's ``ru_maxrss`` at exec (the old address space's high-water
# mark), so a command spawned straight from the bench (or from pytest with torch loaded) would report at
# least the bench's own peak. Spawned from this ~10 MB launcher it reports its own; wait4 reads it.
_LAUNCHER = """
import os, sys
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as fh:
    fh.write(str(usage.ru_maxrss))
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def run_child(argv: Sequence[str], marker: str | None = None, timeout_s: float | None = None,
              env: dict[str, str] | None = None) -> ChildRun:
    """Run ``argv`` through the launcher, streaming its stdout; its own peak RSS comes back from ``wait4``.

    stderr goes to a temp file (a full pipe would block the child); output is
    unbuffered so the time of the first ``marker`` line is real. The launcher
    is the floor of what can be measured (~10 MB), far below any edgecvm run.
    ``env``: variables added to this process's environment. After
    ``timeout_s`` the launcher's whole process group is killed: on a
    busy 2-core machine torch's OpenMP threads can crawl (seen: 3 minutes for
    what takes 4 s on an idle one), and a benchmark must end.
    """
    env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryDirectory(prefix="edgecvm-child-") as tmp, tempfile.TemporaryFile("w+") as err:
        rss_file = Path(tmp) / "ru_maxrss"
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-S", "-c", _LAUNCHER, str(rss_file), *map(str, argv)],
                                stdout=subprocess.PIPE, stderr=err, text=True, env=env, start_new_session=True)
        timer = threading.Timer(timeout_s, _kill_group, (proc.pid,)) if timeout_s else None
        if timer is not None:
            timer.start()
        first = None
        lines = []
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                if first is None and marker is not None and marker in line:
                    first = time.monotonic() - started
                lines.append(line)
            code = proc.wait()
        finally:
            if timer is not None:
                timer.cancel()
        if timer is not None and time.monotonic() - started >= timeout_s:  # type: ignore[operator]
            err.write(f"\ntimed out after {timeout_s:.0f} s (is the machine busy?)\n")
        wall = time.monotonic() - started
        err.seek(0)
        stderr = err.read()
        peak_units = int(rss_file.read_text()) if rss_file.is_file() else 0
    peak = peak_units * (1 if sys.platform == "darwin" else 1024)  # bytes on macOS, kB on Linux
    return ChildRun(code, lines, stderr, round(peak / MB, 1), round(wall, 3), None if first is None else round(first, 3))


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def edgecvm_argv(*args: object) -> list[str]:
    """``python -m edgecvm ARGS`` with this interpreter."""
    return [sys.executable, "-m", "edgecvm", *map(str, args)]
