"""Benchmark: `edgecvm serve` with one page open against `edgecvm learn` on the same stream, in the same run.

    python tests/serve/bench_serve.py --bundle B [--profile P] [--repeat 3] [--copies 3]

Both commands learn every frame of the same labelled folder (the built-in
sample's training images, ``--copies`` times over, shuffled with one seed), in
alternating rounds with fresh state dirs. While serve learns, one "page" is
open: a client doing what static/app.js does (the predictions feed, a preview
JPEG after each one + 250 ms, the status every second, the concepts when the
update count changes). It prints one JSON line per round and a summary:
learning frames/s of each (serve: over the stream, from its summary) and their
median ratio; peak RSS of each (ru_maxrss) and the median difference.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
SAMPLE = REPO / "edgecvm" / "resources" / "samples" / "tiny10" / "train"


def edgecvm(*args: object) -> list[str]:
    return [sys.executable, "-m", "edgecvm", *map(str, args)]


def make_stream(folder: Path, copies: int) -> Path:
    for concept in SAMPLE.iterdir():
        (folder / concept.name).mkdir(parents=True)
        for image in concept.iterdir():
            for i in range(copies):
                (folder / concept.name / f"{i}-{image.name}").symlink_to(image)
    return folder


def run_learn(bundle: str, profile: str, stream: Path, state: Path) -> dict:
    done = subprocess.run(edgecvm("learn", "--bundle", bundle, "--profile", profile, "--stream", stream, "--shuffle",
                                  0, "--state", state, "--json"), capture_output=True, text=True, check=True)
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    return {"frames": summary["frames"], "frames_per_s": summary["frames_per_s"], "peak_rss_mb": summary["peak_rss_mb"]}


class Page:
    """What the page's script requests, on threads, until stopped."""

    def __init__(self, base: str) -> None:
        self.base, self.stop, self.requests = base, threading.Event(), 0
        self.threads = [threading.Thread(target=t, daemon=True) for t in (self._feed, self._preview, self._status)]

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.base + path, timeout=30) as response:
            self.requests += 1
            return response.read()

    def _feed(self) -> None:
        with urllib.request.urlopen(self.base + "/api/predictions", timeout=30) as response:
            while not self.stop.is_set() and response.readline():
                pass

    def _preview(self) -> None:
        while not self.stop.is_set():
            try:
                self.get("/api/preview.jpg")
                self.stop.wait(0.25)
            except OSError:
                self.stop.wait(1.0)

    def _status(self) -> None:
        updates = None
        while not self.stop.is_set():
            status = json.loads(self.get("/api/status"))
            if status["learning"]["updates"] != updates:
                updates = status["learning"]["updates"]
                self.get("/api/concepts")
            self.stop.wait(1.0)

    def __enter__(self) -> Page:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()


def run_serve(bundle: str, profile: str, stream: Path, state: Path) -> dict:
    process = subprocess.Popen(edgecvm("serve", "--bundle", bundle, "--profile", profile, "--stream", stream,
                                       "--shuffle", 0, "--state", state, "--port", 0, "--json"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base = json.loads(process.stdout.readline())["url"].rstrip("/")  # type: ignore[union-attr]
        with Page(base) as page:
            while json.loads(page.get("/api/status"))["stream"]["state"] == "running":
                time.sleep(0.5)
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=120)
    summary = json.loads(out.strip().splitlines()[-1])
    return {"frames": summary["frames"], "frames_per_s": summary["stream_frames_per_s"],
            "peak_rss_mb": summary["peak_rss_mb"], "page_requests": page.requests}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--profile", default="host")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--copies", type=int, default=3, help="times each training image appears in the stream")
    args = parser.parse_args()
    os.environ["PYTHONPATH"] = f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        stream = make_stream(Path(tmp) / "stream", args.copies)
        for i in range(args.repeat):
            learn = run_learn(args.bundle, args.profile, stream, Path(tmp) / f"learn-{i}")
            serve = run_serve(args.bundle, args.profile, stream, Path(tmp) / f"serve-{i}")
            record = {"round": i, "learn": learn, "serve": serve,
                      "fps_ratio": round(serve["frames_per_s"] / learn["frames_per_s"], 3),
                      "rss_delta_mb": round(serve["peak_rss_mb"] - learn["peak_rss_mb"], 1)}
            rounds.append(record)
            print(json.dumps(record), flush=True)
    print(json.dumps({
        "event": "summary", "profile": args.profile, "bundle": args.bundle, "frames": rounds[0]["learn"]["frames"],
        "learn_frames_per_s": statistics.median(r["learn"]["frames_per_s"] for r in rounds),
        "serve_frames_per_s": statistics.median(r["serve"]["frames_per_s"] for r in rounds),
        "fps_ratio_median": statistics.median(r["fps_ratio"] for r in rounds),
        "learn_peak_rss_mb": statistics.median(r["learn"]["peak_rss_mb"] for r in rounds),
        "serve_peak_rss_mb": statistics.median(r["serve"]["peak_rss_mb"] for r in rounds),
        "rss_delta_mb_median": statistics.median(r["rss_delta_mb"] for r in rounds),
    }), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
