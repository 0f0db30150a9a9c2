"""Soak: stream 100,000 frames through the real `edgecvm learn` loop and check that memory does not creep.

Run: ``python tests/reliability/soak.py [--frames 100000] [--bundle DIR] [--profile host]`` (``make soak``).

Everything is the real `learn` command, in this process: bundle verification,
memory plan, the learner with the bundle's head (EfficientNet-Lite0 features
1,280 -> 384, ConSE branch) and the profile's head method (``lda`` on host:
class statistics, scheduled solves, the blend refitted on replayed samples),
latent replay at the profile's size, the
update thread, RSS monitor, checkpoints every ``--checkpoint-every`` updates.
Only two things are synthetic, to make 100,000 frames take minutes instead of
hours: the stream (tiny placeholder frames naming one of ``--concepts``
labels, in shuffled order) and the backbone (per-concept clusters of
non-negative 1,280-d features, drawn fresh for every frame).

RSS is sampled as frames go by, with its anonymous and file-backed parts
where /proc has them. The baseline is taken after warm-up (``--warmup``
frames: replay buffer full, every concept seen, a few checkpoints written),
because two things become resident once, by design: the preallocated replay
buffer as it fills, and library code that ``process_tuning`` released after
start-up, paged back in as the loop reaches it (measured: file-backed RSS
13.3 MB at frame 5,000, 17.2 MB from frame 8,500 on, flat to 100,000; hence
10,000 frames). Growth = (end - baseline) / baseline
must stay within ``--max-growth`` (5 %); the exit code is 1 when it does not.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

import edgecvm.device.device
from edgecvm import resources
from edgecvm.cli import main as edgecvm_main
from edgecvm.device.memory_plan import MB, current_rss_bytes, rss_parts
from edgecvm.device.streams import Frame, SourceKind, Stream
from edgecvm.formats.anchors import load_anchors
from edgecvm.formats.bundle import load_bundle

REPO = Path(__file__).resolve().parents[2]
DEFAULT_BUNDLE = REPO / ".cache" / "reliability" / "soak-bundle"
PROGRESS_EVERY = 10_000  # frames between RSS lines on stderr


class LabelPixel:
    """Stands in for the ``Preprocessor``: a frame's single pixel (its concept) as a (3, 1, 1) input."""

    input_size = 1

    def decode_size(self, width: int, height: int) -> tuple[int, int]:
        return width, height  # the stream's frames are made, not decoded

    def __call__(self, image: Image.Image, out: np.ndarray | None = None) -> np.ndarray:
        out = np.empty((3, 1, 1), np.float32) if out is None else out
        out[:] = image.getpixel((0, 0))
        return out


class SyntheticBackbone:
    """Stands in for ``runtime.FeatureExtractor``: a frame's single pixel names its concept's feature cluster."""

    def __init__(self, feature_dim: int, n_concepts: int, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.centres = self.rng.gamma(1.0, 1.0, size=(n_concepts, feature_dim)).astype(np.float32)
        self.feature_dim = feature_dim
        self.preprocess = LabelPixel()

    def warm_up(self) -> None:
        """Nothing to allocate or load ahead of the first frame."""

    def run(self, batch: np.ndarray) -> np.ndarray:
        labels = batch[:, 0, 0, 0].astype(np.int64)
        noise = self.rng.normal(0.0, 0.6, size=(len(labels), self.feature_dim)).astype(np.float32)
        return np.maximum(self.centres[labels] + noise, 0.0)


def _rss_parts() -> dict[str, float]:
    """RSS split into anonymous (what a leak grows) and file-backed (code paged back in) MB, where /proc has it."""
    parts = rss_parts() or {}
    return {f"{key}_mb": parts[key] for key in ("anon", "file") if key in parts}


class SyntheticStream(Stream):
    """``frames`` labelled placeholder frames in a seeded random order; samples RSS at chosen frame counts."""

    def __init__(self, concepts: list[str], frames: int, checkpoints: dict[int, str], seed: int = 0) -> None:
        super().__init__(SourceKind.FOLDER, "synthetic", frames, tuple(sorted(concepts)))
        self.concepts, self.frames, self.checkpoints = concepts, frames, checkpoints
        self.images = [Image.new("L", (1, 1), i) for i in range(len(concepts))]
        self.rng = np.random.default_rng(seed)
        self.rss: dict[str, dict[str, float]] = {}  # start / middle / end
        self.series: list[dict[str, float]] = []  # every PROGRESS_EVERY frames too
        self.started = time.monotonic()

    def __iter__(self) -> Iterator[Frame]:
        labels = self.rng.integers(0, len(self.concepts), size=self.frames)
        for i, label in enumerate(labels, start=1):
            yield Frame(self.images[label], self.concepts[label], f"synthetic#{i}")
            if i in self.checkpoints or i % PROGRESS_EVERY == 0:
                sample = {"frame": i, "rss_mb": round((current_rss_bytes() or 0) / MB, 2), **_rss_parts(),
                          "elapsed_s": round(time.monotonic() - self.started, 1)}
                self.series.append(sample)
                print(f"soak: {sample}", file=sys.stderr, flush=True)
                if i in self.checkpoints:
                    self.rss[self.checkpoints[i]] = sample


def ensure_bundle(path: Path) -> Path:
    """The bundle to soak with: the given one, or an export of Lite0 at 160 px cached under .cache/."""
    if (path / "manifest.json").is_file():
        return path
    print(f"exporting a bundle to {path} (once)", file=sys.stderr)
    # In a subprocess: torch must not inflate this process's RSS.
    subprocess.run([sys.executable, "-m", "edgecvm", "export", "--recipe", str(resources.recipe("lite0-160.yaml")),
                    "--anchors", str(resources.anchors_file("tiny-imagenet-200.anchors.npz")), "--out", str(path)],
                   check=True)
    return path


def soak(args: argparse.Namespace) -> dict[str, object]:
    bundle = load_bundle(ensure_bundle(Path(args.bundle)))
    concepts = list(load_anchors(bundle.anchors_path).names[: args.concepts])
    marks = {args.warmup: "start", (args.warmup + args.frames) // 2: "middle", args.frames: "end"}
    stream = SyntheticStream(concepts, args.frames, marks)
    backbone = SyntheticBackbone(bundle.manifest.feature_dim, len(concepts))
    edgecvm.device.device.FeatureExtractor = lambda _bundle, _profile, **_options: backbone  # type: ignore[assignment,misc]
    edgecvm.device.device.Device.open_stream = lambda _self, *_a, **_k: stream  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory(prefix="edgecvm-soak-") as work:
        # --stream names an (empty) folder so `learn` takes it for a labelled source; the frames come from `stream`.
        source, state = Path(work) / "synthetic", str(Path(work) / "state")
        source.mkdir()
        argv = ["learn", "--bundle", str(bundle.folder), "--stream", str(source), "--state", state,
                "--profile", args.profile, "--checkpoint-every", str(args.checkpoint_every)]
        started = time.monotonic()
        rc = edgecvm_main(argv)
        elapsed = time.monotonic() - started
    if rc != 0 or "end" not in stream.rss:
        raise SystemExit(f"soak: learn stopped early (exit {rc}) after {len(stream.series)} RSS samples")
    start, end = stream.rss["start"]["rss_mb"], stream.rss["end"]["rss_mb"]
    growth = (end - start) / start
    return {
        "event": "soak", "exit_code": rc, "frames": args.frames, "concepts": len(concepts),
        "profile": args.profile, "checkpoint_every": args.checkpoint_every, "elapsed_s": round(elapsed, 1),
        "frames_per_s": round(args.frames / elapsed, 1), "rss": stream.rss, "rss_series": stream.series, "growth": round(growth, 4),
        "max_growth": args.max_growth, "ok": rc == 0 and growth <= args.max_growth,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=100_000, help="frames to stream (default 100,000)")
    parser.add_argument("--warmup", type=int, default=10_000, help="frames before the RSS baseline (default 10,000)")
    parser.add_argument("--concepts", type=int, default=50, help="distinct labels in the stream (default 50)")
    parser.add_argument("--bundle", default=str(DEFAULT_BUNDLE), help="bundle folder (default: exported once into .cache)")
    parser.add_argument("--profile", default="host", help="device profile (default host: 5 MB replay, batch 32)")
    parser.add_argument("--checkpoint-every", type=int, default=500, help="updates between checkpoints (default 500)")
    parser.add_argument("--max-growth", type=float, default=0.05, help="allowed RSS growth after warm-up (default 0.05)")
    args = parser.parse_args()
    if not 0 < args.warmup < args.frames:
        parser.error("need 0 < --warmup < --frames")
    report = soak(args)
    print(json.dumps(report))
    rss = report["rss"]
    print(f"soak: {report['frames']:,} frames in {report['elapsed_s']} s; RSS start {rss['start']['rss_mb']} MB "  # type: ignore[index]
          f"(frame {args.warmup:,}), middle {rss['middle']['rss_mb']} MB, end {rss['end']['rss_mb']} MB: "  # type: ignore[index]
          f"growth {100 * report['growth']:+.2f} % (limit {100 * args.max_growth:.0f} %) -> "  # type: ignore[operator]
          f"{'OK' if report['ok'] else 'FAIL'}", file=sys.stderr)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
