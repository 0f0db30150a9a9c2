"""The peer of a fleet round: Flower's FedAvg over the gradient (``sgd``) heads, R rounds, accuracy after each.

    python tests/fleet/bench_fedavg.py --bundle B --data ZIP [--devices 20] [--rounds 10] [--json OUT]

Tiny-ImageNet's 40,000 training images (the evaluation's cached features), dealt at random over N devices as in
bench_fleet.py. Each round every device starts from the global head, learns its share once as a device does (16
frames an update, with replay), and sends its head back; Flower's FedAvg takes their mean weighted by the images
each learned. After each round the global head's accuracy on the 10,000 val images of the 200 classes is
measured; one JSON line per round (the exact merge's one round: bench_fleet.py). Runs in the Simulation Engine
in this process, which takes Flower's offline environment first (edgecvm/fleet/launch.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation

from edgecvm import resources
from edgecvm.device.profiles import load_profile
from edgecvm.eval.feature_cache import load_features
from edgecvm.fleet.launch import offline_env
from edgecvm.formats.bundle import load_bundle, load_head_and_anchors
from edgecvm.learning.learner import Learner, LearnerConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--data", required=True, help="the Tiny-ImageNet zip the evaluation's features came from")
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the lines to this file")
    args = parser.parse_args()
    ray_tmp = tempfile.mkdtemp(prefix="r", dir="/tmp")  # Ray's socket path: short
    os.environ.update(offline_env(os.environ, ray_tmpdir=ray_tmp))  # this program's own environment, before Ray
    bundle = load_bundle(args.bundle)
    head, anchors = load_head_and_anchors(bundle)
    table = load_features(bundle, load_profile("host"), Path(args.data), resources.user_cache_dir())
    rng = np.random.default_rng(args.seed)
    train = rng.permutation(np.flatnonzero(table.is_train))  # the split of bench_fleet.py
    val = np.flatnonzero(~table.is_train)
    concepts = list(table.concepts)
    truth = np.array([concepts[y] for y in table.labels[val]], dtype=object)
    shares = Path(tempfile.mkdtemp(prefix="edgecvm-fedavg-"))
    for i, part in enumerate(np.array_split(train, args.devices)):  # each virtual device reads only its share
        np.savez(shares / f"device-{i}.npz", features=table.features[part], labels=table.labels[part])

    def learner(params: ArrayRecord) -> Learner:
        device = Learner(head, anchors, LearnerConfig(method="sgd"))
        device.restore_known(concepts)  # one output space: every device scores all 200 classes
        for name, value in params.items():
            device.method.head.params[name][...] = value.numpy()
        return device

    client = ClientApp()

    @client.train()
    def train_share(msg: Message, context: Context) -> Message:
        share = np.load(shares / f"device-{int(context.node_config['partition-id'])}.npz")
        device = learner(msg.content["arrays"])
        features, labels = share["features"], share["labels"]
        for start in range(0, labels.size, 16):
            device.observe_features(features[start: start + 16], [concepts[y] for y in labels[start: start + 16]])
        record = ArrayRecord({k: Array(v) for k, v in device.method.head.params.items()})
        return Message(RecordDict({"arrays": record, "metrics": MetricRecord({"num-examples": int(labels.size)})}),
                       reply_to=msg)

    lines: list[dict[str, object]] = []
    started = time.perf_counter()

    def evaluate(server_round: int, params: ArrayRecord) -> MetricRecord:
        predictions = learner(params).predict_features(table.features[val], top_k=1)
        accuracy = float(np.mean([p.concept == t for p, t in zip(predictions, truth, strict=True)]))
        line = {"peer": "fedavg-sgd", "devices": args.devices, "round": server_round, "accuracy": round(accuracy, 4),
                "seconds": round(time.perf_counter() - started, 1)}
        lines.append(line)  # round 0: the exported head before any round
        print(json.dumps(line), flush=True)
        return MetricRecord({"accuracy": accuracy})

    server = ServerApp()

    @server.main()
    def run(grid: Grid, context: Context) -> None:
        initial = ArrayRecord({k: Array(v) for k, v in learner(ArrayRecord()).method.head.params.items()})
        FedAvg(fraction_evaluate=0.0, min_available_nodes=args.devices, min_train_nodes=args.devices).start(
            grid=grid, initial_arrays=initial, num_rounds=args.rounds, evaluate_fn=evaluate)

    try:
        run_simulation(server, client, num_supernodes=args.devices,
                       backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}})
    finally:
        shutil.rmtree(shares)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    if args.json:
        args.json.write_text("".join(json.dumps(line) + "\n" for line in lines))


if __name__ == "__main__":
    main()
