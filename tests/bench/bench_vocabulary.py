"""Benchmark: `edgecvm predict --vocab all` with a 200-concept bundle against the same with the 21,843-concept
ImageNet-21k anchor file, side by side in one run.

    python tests/bench/bench_vocabulary.py --bundle B200 --bundle-21k B21K [--profile P] [--repeat 3] [--frames 200]

Each round runs `edgecvm predict --vocab all --json` on the same frames with one bundle, then the other (child
processes): frames/s and peak RSS from predict's own summary, and their ratios 21k / 200. In this process it
times the decision alone (head embedding, a score per anchor, top 5) per frame, in alternating blocks, for the
200 anchors, the 21k held as int8 (what the device does) and the 21k as float32 (what an unquantised matrix
costs), and prints each bundle's memory plan under the profile. One JSON line per round, then a summary.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgecvm import resources
from edgecvm.bench.measure import edgecvm_argv, run_child, write_frame_manifest
from edgecvm.device import process_tuning
from edgecvm.device.memory_plan import MB, plan_for_learner
from edgecvm.device.profiles import learner_config, load_profile
from edgecvm.formats.anchors import AnchorSet
from edgecvm.formats.bundle import load_bundle, load_head_and_anchors
from edgecvm.learning.learner import Learner


def predict_round(bundle: str, profile: str, manifest: Path) -> dict:
    run = run_child(edgecvm_argv("predict", "--bundle", bundle, "--profile", profile, "--stream", manifest,
                                 "--vocab", "all", "--json"))
    if run.code != 0:
        raise SystemExit(f"predict with {bundle} failed: {run.error()}")
    summary = json.loads(run.lines[-1])
    return {"frames_per_s": summary["frames_per_s"], "peak_rss_mb": summary["peak_rss_mb"]}


def decision_ms(learners: dict[str, Learner], frames: int, block: int = 20) -> dict[str, float]:
    """Median ms per frame of ``predict_features`` (1 frame, top 5, every anchor), learners in alternating blocks."""
    features = np.random.default_rng(0).gamma(1.0, 0.3, size=(frames, 1280)).astype(np.float32)
    times: dict[str, list[float]] = {name: [] for name in learners}
    for start in range(0, frames, block):
        for name, learner in learners.items():
            for row in features[start : start + block]:
                began = time.perf_counter()
                learner.predict_features(row, top_k=5, vocab="all")
                times[name].append(1000 * (time.perf_counter() - began))
    return {name: round(statistics.median(t), 3) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True, help="bundle with the 200 Tiny-ImageNet anchors")
    parser.add_argument("--bundle-21k", required=True, help="the same recipe exported with --anchors imagenet-21k")
    parser.add_argument("--profile", default="host")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--frames", type=int, default=200)
    args = parser.parse_args()
    process_tuning.tune_process()  # as the commands run: numpy's BLAS on one thread (threads spinning on 2 busy cores
    # made one frame's decision take 80 ms instead of 1)

    profile = load_profile(args.profile)
    bundles = {"200": load_bundle(args.bundle), "21k": load_bundle(args.bundle_21k)}
    learners, heads = {}, {}
    for name, bundle in bundles.items():
        heads[name], anchors = load_head_and_anchors(bundle)
        learners[name] = Learner(heads[name], anchors, learner_config(profile))
        for learning in (False, True):
            plan = plan_for_learner(profile, bundle.backbone_bytes, bundle.manifest.input_size, learners[name],
                                    learning=learning)
            print(json.dumps({"bundle": name, "anchors": len(anchors), "held_as": anchors.dtype,
                              "command": "learn" if learning else "predict",
                              "plan_mb": round(plan.total_bytes / MB, 1),
                              "anchors_mb": round(anchors.resident_bytes / MB, 2),
                              "budget_mb": profile.memory_budget_mb}), flush=True)
    dense = learners["21k"].anchors
    learners["21k-float32"] = Learner(heads["21k"], AnchorSet(dense.names, dense.vectors, dense.model,
                                                              dense.templates, "float16"), learner_config(profile))
    print(json.dumps({"decision_ms_per_frame": decision_ms(learners, args.frames)}), flush=True)

    rounds = []
    with tempfile.TemporaryDirectory(prefix="bench-vocabulary-") as tmp:
        manifest = write_frame_manifest(str(resources.sample_dir() / "train"), args.frames, Path(tmp) / "frames.csv")
        for i in range(args.repeat):
            result = {name: predict_round(str(bundle.folder), args.profile, manifest)
                      for name, bundle in bundles.items()}
            result["fps_ratio"] = round(result["21k"]["frames_per_s"] / result["200"]["frames_per_s"], 3)
            result["rss_diff_mb"] = round(result["21k"]["peak_rss_mb"] - result["200"]["peak_rss_mb"], 1)
            rounds.append(result)
            print(json.dumps({"round": i + 1, **result}), flush=True)
    print(json.dumps({"summary": {
        "profile": args.profile, "frames": args.frames, "rounds": len(rounds),
        "predict_fps_200": statistics.median(r["200"]["frames_per_s"] for r in rounds),
        "predict_fps_21k": statistics.median(r["21k"]["frames_per_s"] for r in rounds),
        "fps_ratio_21k_over_200": statistics.median(r["fps_ratio"] for r in rounds),
        "peak_rss_mb_200": max(r["200"]["peak_rss_mb"] for r in rounds),
        "peak_rss_mb_21k": max(r["21k"]["peak_rss_mb"] for r in rounds),
        "rss_diff_mb": statistics.median(r["rss_diff_mb"] for r in rounds)}}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
