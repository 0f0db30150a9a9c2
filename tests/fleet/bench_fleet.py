"""Benchmark: one Flower fleet round in the Simulation Engine over N devices' state dirs, against one learner taught
every image, in the same run.

    python tests/fleet/bench_fleet.py --bundle B --data ZIP [--devices 20 200] [--dtype float32] [--json OUT]

Tiny-ImageNet's 40,000 training images (the evaluation's cached features) are dealt at random over N devices;
each device is taught its share (the lda head, as on a device) and saved; one round runs (tests/fleet/simulate.py,
a process of its own with Flower's offline environment). Reported per N: the round's seconds (the server's
clock, nodes asked to totals adopted), the simulation process's peak RSS and peak memory allocated during the run
(tracemalloc; the ServerApp and Flower's in-process SuperLink run there, the ClientApps in Ray's workers), the bytes one device uploads, the largest difference of
every device's statistics from the single learner's (relative to the largest value), and the accuracy on the
10,000 val images of the discriminant solved from them (first and last device) against the single learner's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgecvm import resources
from edgecvm.device.profiles import load_profile
from edgecvm.device.state import StateIdentity, load_state, save_state
from edgecvm.eval.feature_cache import FeatureTable, load_features
from edgecvm.fleet.launch import offline_env
from edgecvm.fleet.processes import stop_tree
from edgecvm.formats.anchors import AnchorSet
from edgecvm.formats.bundle import load_bundle, load_head_and_anchors
from edgecvm.formats.head_file import HeadParams
from edgecvm.learning.analytic_head import AnalyticHead
from edgecvm.learning.fleet import adopt_total
from edgecvm.learning.learner import Learner, LearnerConfig
from edgecvm.learning.merge import NamedStatistics, from_class_statistics

SIMULATE = Path(__file__).resolve().parent / "simulate.py"
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "learning"))
from bench_merge import largest_difference  # noqa: E402 - the merge benchmark's measure, beside it in tests/


def accuracy(learner: Learner, table: FeatureTable, val: np.ndarray) -> float:
    predictions = learner.predict_features(table.features[val], top_k=1)
    return float(np.mean([p.concept == table.concepts[y] for p, y in zip(predictions, table.labels[val], strict=True)]))


def discriminant(head: HeadParams, anchors: AnchorSet, stats: NamedStatistics) -> Learner:
    learner = Learner(head, anchors, method=AnalyticHead("lda", head, use_conse=False))
    adopt_total(learner, stats)
    return learner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--data", required=True, help="the Tiny-ImageNet zip the evaluation's features came from")
    parser.add_argument("--devices", type=int, nargs="+", default=[20, 200])
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the lines to this file")
    args = parser.parse_args()
    bundle = load_bundle(args.bundle)
    head, anchors = load_head_and_anchors(bundle)
    identity = StateIdentity.of_bundle(bundle)
    table = load_features(bundle, load_profile("host"), Path(args.data), resources.user_cache_dir())
    rng = np.random.default_rng(args.seed)
    train = rng.permutation(np.flatnonzero(table.is_train))
    val = np.flatnonzero(~table.is_train)
    names = np.array(table.concepts, dtype=object)

    single = Learner(head, anchors, method=AnalyticHead("lda", head, use_conse=False))
    single.observe_features(table.features[train], list(names[table.labels[train]]))
    want = from_class_statistics(single.method.stats, single.known)
    single_accuracy = accuracy(single, table, val)
    lines = []
    for n in args.devices:
        with tempfile.TemporaryDirectory(prefix="edgecvm-fleet-bench-") as tmp, \
                tempfile.TemporaryDirectory(prefix="r", dir="/tmp") as ray_tmp:
            root = Path(tmp)
            start = time.perf_counter()
            for i, part in enumerate(np.array_split(train, n)):
                device = Learner(head, anchors, LearnerConfig(method="lda"))
                device.observe_features(table.features[part], list(names[table.labels[part]]))
                save_state(root / f"device-{i}", device, identity)
            taught = time.perf_counter() - start
            result = root / "result.json"
            proc = subprocess.Popen([sys.executable, str(SIMULATE), "--states", str(root), "--bundle", args.bundle,
                                     "--nodes", str(n), "--dtype", args.dtype, "--result", str(result)],
                                    env=offline_env(os.environ, ray_tmpdir=ray_tmp), start_new_session=True,
                                    stdout=subprocess.PIPE, text=True)
            try:
                out, _ = proc.communicate(timeout=3600)
            finally:
                stop_tree(proc.pid)
            (round_,) = json.loads(result.read_text())
            differences, accuracies = [], []
            for i in range(n):
                device = load_state(root / f"device-{i}", head, anchors, identity)
                got = from_class_statistics(device.method.stats, device.known)
                differences.append(largest_difference(got, want))
                if i in (0, n - 1):
                    accuracies.append(round(accuracy(discriminant(head, anchors, got), table, val), 4))
        line = {"devices": n, "dtype": args.dtype, "images": int(train.size), "accepted": len(round_["accepted"]),
                "adopted": len(round_["adopted"]), "round_seconds": round(round_["seconds"], 1),
                **{f"simulation_{k[7:]}": v for k, v in json.loads(out.strip().splitlines()[-1]).items()},
                "upload_mb_per_device": round(round_["upload_bytes"] / 2**20, 2),
                "largest_difference": {k: max(d[k] for d in differences) for k in differences[0]},
                "accuracy_single": round(single_accuracy, 4), "accuracy_devices_first_last": accuracies,
                "teach_seconds": round(taught, 1)}
        lines.append(line)
        print(json.dumps(line), flush=True)
    if args.json:
        args.json.write_text("".join(json.dumps(line) + "\n" for line in lines))


if __name__ == "__main__":
    main()
