"""What `edgecvm bench` measures, and how: per-stage timings in process, whole runs in child processes.

* **Stages** run in the bench process, one frame at a time, each timed on its
  own: decode, preprocess, backbone, head predict, head update (with its
  replay minibatch). They run in line here (in the commands decoding and
  preprocessing overlap the backbone on the pipeline's worker, and the update
  overlaps the next backbone run on the update thread), so each cost is visible.
* **The backbone alone** (``time_backbone``): in a child process that opens
  its device as ``predict`` does (cli/backbone_alone.py: why a process of its
  own), the session runs on frames preprocessed beforehand, in each round next
  to the commands' runs: the ceiling that ``predict`` and ``learn`` are
  compared with.
* **A camera-rate source** (``camera_latency``): a video played at its frame
  rate through the pipeline, backbone and head, as ``predict`` runs it; the
  time from each frame's arrival to its answer.
* **Runs** are the real commands, ``python -m edgecvm predict|learn``, in a
  child process each, on the same frames: frames/s and CPU seconds come from
  their own summaries, peak RSS from the kernel (``os.wait4``: the child's own
  ``ru_maxrss``, not a maximum over other children; see ``_LAUNCHER`` for
  why a small launcher sits in between) with its anonymous and file-backed
  parts sampled from /proc, cold start is
  the time from spawning ``predict`` to its first frame line on stdout.
* Frames are written once to a manifest (``path,label`` CSV): a labelled file
  source, shuffled with a fixed seed (concepts interleave, so the head's
  update discriminates several concepts from the start) and repeated up to
  ``--frames``. Every measurement reads the same list.
"""

from __future__ import annotations

import csv
import json
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
from edgecvm.device.latency import AnswerLatency
from edgecvm.device.memory_plan import MB
from edgecvm.device.pipeline import FramePipeline
from edgecvm.device.profiles import DeviceProfile
from edgecvm.device.runtime import FeatureExtractor
from edgecvm.device.streams import FileStream, open_stream
from edgecvm.errors import BadInputError
from edgecvm.formats.bundle import Bundle
from edgecvm.learning.learner import Learner
from edgecvm.reporting import ProgressFactory, silent

WARMUP_FRAMES = 3  # first frames fill ORT's caches and the replay buffer; not in the percentiles
STAGES = ("decode", "preprocess", "backbone", "head_predict", "head_update")
BACKBONE_INPUTS = 16  # distinct preprocessed frames the backbone-alone run cycles through


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
    with device.open_stream(str(manifest)) as stream, \
            progress(stream.total, f"bench {label}: stages", "frames") as bar:
        frames = iter(stream)
        for i in range(stream.total or 0):
            t0 = time.perf_counter()
            frame = next(frames)
            if frame.image is None:
                bar.update(1)
                continue
            t01 = time.perf_counter()
            batch = extractor.preprocess.batch([frame.image])
            t1 = time.perf_counter()
            features = extractor.run(batch)
            t2 = time.perf_counter()
            learner.observe_features(features, [frame.label or ""])  # first: a head with no data may not predict
            t3 = time.perf_counter()
            learner.predict_features(features, top_k=5, vocab="all")
            t4 = time.perf_counter()
            if i >= WARMUP_FRAMES:
                for stage, seconds in zip(STAGES, (t01 - t0, t1 - t01, t2 - t1, t4 - t3, t3 - t2), strict=True):
                    times[stage].append(seconds)
            bar.update(1)
    return {stage: percentiles(samples) for stage, samples in times.items()}


def predict_extractor(bundle: Bundle, profile: DeviceProfile) -> FeatureExtractor:
    """A backbone session as ``predict`` has it (pool threads never spin), warmed up."""
    extractor = FeatureExtractor(bundle, profile, spinning=False)
    extractor.warm_up()
    return extractor


def time_backbone(extractor: FeatureExtractor, manifest: Path, frames: int) -> tuple[float, float]:
    """Frames/s of the session alone, ``frames`` runs over inputs preprocessed beforehand, and its CPU seconds
    per frame (this process's, every thread: nothing else in it runs meanwhile)."""
    with open_stream(str(manifest), limit=BACKBONE_INPUTS) as stream:
        images = [frame.image for frame in stream if frame.image is not None]
    if not images:
        raise BadInputError(f"{manifest}: none of its first {BACKBONE_INPUTS} frames could be read")
    batches = [extractor.preprocess.batch([image]) for image in images]
    for batch in batches[:WARMUP_FRAMES]:
        extractor.run(batch)
    started, cpu_started = time.perf_counter(), time.process_time()
    for i in range(frames):
        extractor.run(batches[i % len(batches)])
    return frames / (time.perf_counter() - started), (time.process_time() - cpu_started) / frames


def camera_latency(extractor: FeatureExtractor, learner: Learner, video: Path, frames: int) -> dict[str, object]:
    """``video`` played at its frame rate through the pipeline, backbone and head (zero-shot over every
    anchor): p50/p95 ms from each frame's arrival to its answer, and the frames answered (a frame the
    consumer is too late for is skipped, as a camera replaces it: streams.VideoStream)."""
    latency = AnswerLatency()
    with open_stream(str(video), limit=frames, realtime=True) as stream, \
            FramePipeline(stream, extractor.preprocess) as pipeline:
        for i, item in enumerate(pipeline):
            if item.batch is None:
                continue
            learner.predict_features(extractor.run(item.batch), top_k=5, vocab="all")
            seconds = item.frame.age_s()
            if i >= WARMUP_FRAMES and seconds is not None:
                latency.add(seconds)
    return {"source": str(video), **latency.summary()}


@dataclass(frozen=True)
class ChildRun:
    """One finished child process: exit code, stdout lines, stderr tail, the kernel's peak RSS for it."""

    code: int
    lines: list[str]
    stderr: str
    peak_rss_mb: float
    wall_s: float
    first_match_s: float | None  # seconds from spawn to the first stdout line containing the marker
    cpu_s: float | None = None  # user + system CPU of the child, start-up included (wait4's rusage)
    memory: MemorySplit | None = None  # None where there is no /proc

    def error(self) -> str:
        """The child's last stderr line (its one-line error), for the report."""
        tail = [line for line in self.stderr.splitlines() if line.strip()]
        return tail[-1] if tail else f"exit code {self.code}"


# Run by a fresh, small interpreter between the bench and the measured command. Linux copies the
# spawning process's peak RSS into the child's ``ru_maxrss`` at exec (the old address space's high-water
# mark), so a command spawned straight from the bench (or from pytest with torch loaded) would report at
# least the bench's own peak. Spawned from this ~10 MB launcher it reports its own; wait4 reads it, with
# the child's CPU time. While it runs, the launcher reads the child's /proc/PID/status every 10 ms and
# keeps the split of the largest RSS it saw (anonymous, file-backed, shared) and the largest of each part.
_LAUNCHER = """
import json, os, sys, time
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
names = {"VmRSS": "rss", "RssAnon": "anon", "RssFile": "file", "RssShmem": "shmem"}
at_peak, top = None, {}
while True:
    done, status, usage = os.wait4(pid, os.WNOHANG)
    if done:
        break
    try:
        with open(f"/proc/{pid}/status") as fh:
            fields = dict(line.split(":", 1) for line in fh if ":" in line)
        kb = {key: int(fields[name].split()[0]) for name, key in names.items()}
    except (OSError, KeyError, ValueError):
        kb = None
    if kb:
        top = {key: max(top.get(key, 0), value) for key, value in kb.items()}
        if at_peak is None or kb["rss"] > at_peak["rss"]:
            at_peak = kb
    time.sleep(0.01)
with open(sys.argv[1], "w") as fh:
    json.dump({"ru_maxrss": usage.ru_maxrss, "cpu_s": usage.ru_utime + usage.ru_stime,
               "at_peak_kb": at_peak, "max_kb": top or None}, fh)
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


@dataclass(frozen=True)
class MemorySplit:
    """The child's resident memory as sampled from /proc: at the largest RSS seen, and the largest of each part."""

    at_peak_mb: dict[str, float]  # rss, anon, file, shmem at the sample with the largest RSS
    max_mb: dict[str, float]  # the largest anon, file, shmem (and rss) of any sample

    @classmethod
    def from_kb(cls, at_peak: dict[str, int] | None, top: dict[str, int] | None) -> MemorySplit | None:
        if not at_peak or not top:
            return None
        return cls({k: round(v / 1024, 1) for k, v in at_peak.items()}, {k: round(v / 1024, 1) for k, v in top.items()})


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
        usage_file = Path(tmp) / "usage.json"
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-S", "-c", _LAUNCHER, str(usage_file), *map(str, argv)],
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
        usage = json.loads(usage_file.read_text()) if usage_file.is_file() else {}
    peak = usage.get("ru_maxrss", 0) * (1 if sys.platform == "darwin" else 1024)  # bytes on macOS, kB on Linux
    cpu = usage.get("cpu_s")
    return ChildRun(code, lines, stderr, round(peak / MB, 1), round(wall, 3), None if first is None else round(first, 3),
                    None if cpu is None else round(cpu, 3), MemorySplit.from_kb(usage.get("at_peak_kb"), usage.get("max_kb")))


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def edgecvm_argv(*args: object) -> list[str]:
    """``python -m edgecvm ARGS`` with this interpreter."""
    return [sys.executable, "-m", "edgecvm", *map(str, args)]
