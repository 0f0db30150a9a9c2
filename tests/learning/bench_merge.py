"""Benchmark: Tiny-ImageNet's 40,000 training images split over N devices, their statistics merged, against one
learner taught every image, in the same run.

    python tests/learning/bench_merge.py --bundle B --data ZIP [--devices 20 200] [--json OUT]

For each N and each split (``disjoint``: every class on one device; ``mix``: the images dealt at random)
each device's class statistics are built as on a device (float32) and merged one after the other, as
``edgecvm state merge`` does. Reported per case: the largest difference of the merged counts, means and
scatter from the single learner's (relative to the largest value), the accuracy on the 10,000 val images
of a head solved from each (the discriminant alone, Ledoit-Wolf shrinkage), the seconds and the peak
memory allocated (tracemalloc) while merging, and the bytes of one device's statistics in a compact form
(counts, class means and the covariance's upper triangle) in float32 and in float16, with the accuracy of
the head solved from statistics rounded to float16 that way.

``--taught CLASSES DEVICES``: the product head as a device runs it (with the ConSE blend, whose two numbers
each device fits on its own replay buffer), taught 16 frames per update: one learner on CLASSES classes x
100 images, and DEVICES devices on their shares, each then merged with the others' statistics; reported:
the single learner's accuracy on those classes' val images and each merged device's.

Features come from the evaluation's cache (``make eval`` fills it). One JSON line per case on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

from edgecvm import resources
from edgecvm.device.profiles import load_profile
from edgecvm.eval.feature_cache import FeatureTable, load_features
from edgecvm.fleet.update import Identity, Update, decode, encode, upload_bytes
from edgecvm.formats.anchors import AnchorSet
from edgecvm.formats.bundle import load_bundle, load_head_and_anchors
from edgecvm.formats.head_file import HeadParams
from edgecvm.learning.analytic_head import AnalyticHead, ClassStatistics
from edgecvm.learning.fleet import adopt_fleet, own_statistics
from edgecvm.learning.learner import Learner
from edgecvm.learning.merge import NamedStatistics, from_class_statistics, merge


def device_statistics(table: FeatureTable, rows: np.ndarray) -> NamedStatistics:
    """One device's statistics: float32, its classes numbered in the order it met them."""
    labels = table.labels[rows]
    order = list(dict.fromkeys(labels.tolist()))
    number = np.zeros(len(table.concepts), np.int64)
    number[order] = np.arange(len(order))
    stats = ClassStatistics(table.features.shape[1])
    stats.add(table.features[rows], number[labels])
    return from_class_statistics(stats, [table.concepts[y] for y in order])


def as_sent(named: NamedStatistics, dtype: str) -> tuple[NamedStatistics, int]:
    """What arrives of ``named`` sent as a fleet update in ``dtype`` (edgecvm/fleet/update.py), and its bytes."""
    arrays, config = encode(Update(Identity("-", "-", named.feature_dim), named), dtype)  # no bundle is checked here
    return decode(arrays, config, "bench").statistics, upload_bytes(arrays)


def accuracy(head: HeadParams, anchors: AnchorSet, named: NamedStatistics, table: FeatureTable,
             val: np.ndarray) -> float:
    learner = Learner(head, anchors, method=AnalyticHead("lda", head, use_conse=False))
    adopt_fleet(learner, named)
    predictions = learner.predict_features(table.features[val], top_k=1)
    truth = [table.concepts[y] for y in table.labels[val]]
    return float(np.mean([p.concept == t for p, t in zip(predictions, truth, strict=True)]))


def teach(learner: Learner, table: FeatureTable, rows: np.ndarray) -> None:
    for start in range(0, rows.size, 16):
        batch = rows[start: start + 16]
        learner.observe_features(table.features[batch], [table.concepts[y] for y in table.labels[batch]])


def taught_devices(head: HeadParams, anchors: AnchorSet, table: FeatureTable, classes: int, devices: int,
                   rng: np.random.Generator) -> list[dict[str, object]]:
    """The product head taught as on a device, alone and as ``devices`` merged devices (module docstring)."""
    chosen = rng.permutation(len(table.concepts))[:classes]
    train = rng.permutation(np.flatnonzero(table.is_train & np.isin(table.labels, chosen) & (table.numbers < 100)))
    val = np.flatnonzero(~table.is_train & np.isin(table.labels, chosen))
    truth = [table.concepts[y] for y in table.labels[val]]

    def score(learner: Learner) -> float:
        predictions = learner.predict_features(table.features[val], top_k=1)
        return float(np.mean([p.concept == t for p, t in zip(predictions, truth, strict=True)]))

    single = Learner(head, anchors)
    teach(single, table, train)
    lines = []
    for split in ("disjoint", "mix"):
        if split == "disjoint":
            groups = np.array_split(chosen, devices)
            parts = [train[np.isin(table.labels[train], group)] for group in groups]
        else:
            parts = np.array_split(train, devices)
        learners = []
        for part in parts:
            learners.append(Learner(head, anchors))
            teach(learners[-1], table, part)
        owns = [own_statistics(learner) for learner in learners]
        merged_accuracy = []
        for i, learner in enumerate(learners):
            others = NamedStatistics.empty(table.features.shape[1])
            for j, own in enumerate(owns):
                if j != i:
                    others = merge(others, own)
            adopt_fleet(learner, others)
            merged_accuracy.append(round(score(learner), 4))
        lines.append({"taught_devices": devices, "classes": classes, "split": split, "images": int(train.size),
                      "accuracy_single": round(score(single), 4), "accuracy_merged_devices": merged_accuracy})
    return lines


def largest_difference(merged: NamedStatistics, single: NamedStatistics) -> dict[str, float]:
    rows = [merged.concepts.index(c) for c in single.concepts]
    means_m = merged.sums[rows] / merged.counts[rows, None]
    means_s = single.sums / single.counts[:, None]
    return {"counts": float(np.abs(merged.counts[rows] - single.counts).max()),
            "means": float(np.abs(means_m - means_s).max() / np.abs(means_s).max()),
            "scatter": float(np.abs(merged.scatter - single.scatter).max() / np.abs(single.scatter).max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--data", required=True, help="the Tiny-ImageNet zip the evaluation's features came from")
    parser.add_argument("--devices", type=int, nargs="*", default=[20, 200])
    parser.add_argument("--taught", type=int, nargs=2, metavar=("CLASSES", "DEVICES"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the lines to this file")
    args = parser.parse_args()
    bundle = load_bundle(args.bundle)
    head, anchors = load_head_and_anchors(bundle)
    table = load_features(bundle, load_profile("host"), Path(args.data), resources.user_cache_dir())
    lines = taught_devices(head, anchors, table, *args.taught, np.random.default_rng(args.seed)) if args.taught else []
    for line in lines:
        print(json.dumps(line), flush=True)
    rng = np.random.default_rng(args.seed)
    train = rng.permutation(np.flatnonzero(table.is_train))
    val = np.flatnonzero(~table.is_train)
    if args.devices:
        single = device_statistics(table, train)
        single_accuracy = accuracy(head, anchors, single, table, val)
    for n in args.devices:
        for split in ("disjoint", "mix"):
            if split == "disjoint":
                groups = np.array_split(rng.permutation(len(table.concepts)), n)
                owner = np.zeros(len(table.concepts), np.int64)
                for device, group in enumerate(groups):
                    owner[group] = device
                parts = [train[owner[table.labels[train]] == d] for d in range(n)]
            else:
                parts = np.array_split(train, n)
            tracemalloc.start()
            start = time.perf_counter()
            merged = merged16 = NamedStatistics.empty(table.features.shape[1])
            for part in parts:  # as they arrive: one device's statistics held at a time
                own = device_statistics(table, part)
                merged, merged16 = merge(merged, own), merge(merged16, as_sent(own, "float16")[0])
            seconds = time.perf_counter() - start
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            line = {"devices": n, "split": split, "images": int(train.size),
                    "largest_difference": largest_difference(merged, single),
                    "accuracy_single": round(single_accuracy, 4),
                    "accuracy_merged": round(accuracy(head, anchors, merged, table, val), 4),
                    "accuracy_merged_float16": round(accuracy(head, anchors, merged16, table, val), 4),
                    "merge_seconds_with_device_statistics": round(seconds, 1),
                    "merge_peak_mb": round(peak / 2**20, 1),
                    "compact_mb_float32": round(as_sent(own, "float32")[1] / 2**20, 2),
                    "compact_mb_float16": round(as_sent(own, "float16")[1] / 2**20, 2)}
            lines.append(line)
            print(json.dumps(line), flush=True)
    if args.json:
        args.json.write_text("".join(json.dumps(line) + "\n" for line in lines))
    print(f"bundle {args.bundle}, {len(table.concepts)} classes, {train.size} training and {val.size} val images",
          file=sys.stderr)


if __name__ == "__main__":
    main()
