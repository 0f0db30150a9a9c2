"""One fleet run in Flower's Simulation Engine over the state dirs ROOT/device-<i> (i = the virtual node's
partition id), for the tests and `make fleet`.

Run as a program of its own (Ray starts workers and changes its host process; the tests' process stays clean) with
the offline environment of edgecvm/fleet/launch.py. ``--forge I`` makes device I send an update no device could
have learned (class means beyond any feature value): it must be refused while the round completes. ``--crash J``
makes device J's ClientApp fail (an error reply from Flower, as when a node drops out mid-round). Writes the
server's round results (server_app.RoundResult) to ``--result`` and prints one JSON line with this process's peak
RSS and the peak of the memory allocated in it during the run (tracemalloc): the ServerApp and Flower's in-process
SuperLink run here, the ClientApps in Ray's workers.
"""

from __future__ import annotations

import argparse
import json
import resource
import tracemalloc
from dataclasses import asdict
from pathlib import Path

import numpy as np
from flwr.app import Context
from flwr.simulation import run_simulation

from edgecvm.fleet.client_app import make_client_app
from edgecvm.fleet.node import DeviceNode
from edgecvm.fleet.server_app import RoundResult, RoundSettings, make_server_app
from edgecvm.formats.bundle import load_bundle, load_head_and_anchors


class CrashingNode(DeviceNode):
    def share(self, dtype: str = "float32") -> tuple[dict[str, np.ndarray], dict[str, object]]:
        raise RuntimeError("this device went away mid-round")


class ForgedNode(DeviceNode):
    def share(self, dtype: str = "float32") -> tuple[dict[str, np.ndarray], dict[str, object]]:
        arrays, meta = super().share(dtype)
        forged = (arrays["means"].astype(np.float64) * 1e12).astype(arrays["means"].dtype)  # float16: Inf, refused too
        return {**arrays, "means": forged}, meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--states", type=Path, required=True)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--forge", type=int, default=-1)
    parser.add_argument("--crash", type=int, default=-1)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args()

    bundle = load_bundle(str(args.bundle))
    head, _ = load_head_and_anchors(bundle)
    settings = RoundSettings(rounds=args.rounds, min_nodes=args.nodes, wait=120.0, timeout=600.0, dtype=args.dtype,
                             bundle_sha256=bundle.sha256,
                             anchors_sha256=bundle.manifest.anchors_sha256, feature_dim=head.feature_dim)

    def device(context: Context) -> DeviceNode:
        i = int(context.node_config["partition-id"])
        kind = {args.forge: ForgedNode, args.crash: CrashingNode}.get(i, DeviceNode)
        return kind(args.states / f"device-{i}", args.bundle)

    results: list[RoundResult] = []

    def report(result: RoundResult) -> None:
        results.append(result)
        args.result.write_text(json.dumps([asdict(r) for r in results]))

    tracemalloc.start()
    run_simulation(make_server_app(report, settings), make_client_app(device), num_supernodes=args.nodes,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}})
    traced = tracemalloc.get_traced_memory()[1]
    print(json.dumps({"server_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                      "server_peak_allocated_mb": round(traced / 2**20, 1)}))


if __name__ == "__main__":
    main()
