"""`edgecvm eval`: the continual-learning benchmark, CVM against its peers on the same frozen features.

Features are extracted once per (backbone, image) into the user's cache folder
($XDG_CACHE_HOME/edgecvm, else ~/.cache/edgecvm; --cache DIR to choose); then
every method learns the scenario's stream and is tested after each task (see
eval/harness.py for the method names and scenarios.py for the protocols).
Prints a Markdown table; ``--json`` and ``--plot`` write the full results and
the accuracy-vs-tasks curve.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

from edgecvm import resources
from edgecvm.cli.common import add_unknown_arguments, positive_int
from edgecvm.cli.progress import Progress
from edgecvm.device.profiles import load_profile
from edgecvm.eval import open_set
from edgecvm.eval.feature_cache import cache_folder, list_dataset, load_features
from edgecvm.eval.harness import (
    CVM_HEAD_METHOD,
    DEFAULT_METHODS,
    HarnessConfig,
    MethodContext,
    method_names,
    run,
)
from edgecvm.eval.report import plot, table, write_json
from edgecvm.eval.scenarios import HOLDOUTS, SCENARIOS, build_scenario
from edgecvm.eval.variants import head_method_names
from edgecvm.formats.bundle import load_bundle, load_head_and_anchors
from edgecvm.learning.head_methods import DEFAULT_METHOD


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="continual-learning benchmark: CVM head vs NCM, SLDA, softmax (+replay), joint, on cached features",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--bundle", required=True, help="bundle folder from `edgecvm export`")
    parser.add_argument("--data", required=True, type=Path,
                        help="zip or folder with train/<class>/ and val/<class>/ images (Tiny-ImageNet layout)")
    parser.add_argument("--scenario", choices=(*SCENARIOS, open_set.OPEN_SET), default="class-incremental",
                        help="open-set: teach --known-fraction of the classes, test known against unknown "
                             "(eval/open_set.py)")
    parser.add_argument("--known-fraction", type=float, default=0.5,
                        help="open-set: share of the classes taught (a seeded choice); the rest are unknown")
    parser.add_argument("--tasks", type=positive_int, default=10, help="classes are split into this many tasks")
    parser.add_argument("--seed", type=int, default=0, help="class order, stream order, replay draws")
    parser.add_argument("--methods",
                        help=f"comma-separated (default {','.join(DEFAULT_METHODS)}; open-set: "
                             f"{','.join(open_set.OPEN_SET_METHODS)}); cvm[:HEAD] and cvm-noreplay[:HEAD] use the device learner with head "
                             f"method HEAD (default {CVM_HEAD_METHOD}; one of {', '.join(head_method_names())}: the "
                             f"device's methods, then research variants only the evaluation runs)")
    parser.add_argument("--shots", type=positive_int, help="few-shot: training images per class")
    parser.add_argument("--epochs", type=positive_int, default=1, help="passes over each task's stream (1 = online)")
    parser.add_argument("--joint-epochs", type=positive_int, default=10, help="epochs of the joint upper bound")
    parser.add_argument("--holdout", choices=HOLDOUTS, default="val",
                        help="test on the val images, or on a dev split of training images (for choosing settings)")
    parser.add_argument("--profile", default="host", help="device profile: replay budget, batch, memory budget")
    parser.add_argument("--cache", "--cache-dir", dest="cache", type=Path, metavar="DIR", default=argparse.SUPPRESS,
                        help="where extracted features are kept (default: $XDG_CACHE_HOME/edgecvm, or "
                             "~/.cache/edgecvm when XDG_CACHE_HOME is unset)")
    add_unknown_arguments(parser)
    parser.add_argument("--json", type=Path, metavar="FILE", help="write every figure as JSON")
    parser.add_argument("--plot", type=Path, metavar="FILE.png", help="write the accuracy-vs-tasks plot")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    open_set_run = args.scenario == open_set.OPEN_SET
    names = method_names(args.methods or ",".join(open_set.OPEN_SET_METHODS if open_set_run else DEFAULT_METHODS))
    started = time.monotonic()
    bundle = load_bundle(args.bundle)
    profile = load_profile(args.profile)
    images = list_dataset(args.data)
    table_started = time.monotonic()
    cache = args.cache if "cache" in vars(args) else resources.user_cache_dir()
    features = load_features(bundle, profile, args.data, cache, images, progress=Progress)
    feature_seconds = time.monotonic() - table_started
    if open_set_run:
        scenario, known = open_set.build_open_set(features, args.known_fraction, args.tasks, args.seed, args.holdout)
    else:
        scenario = build_scenario(features, args.scenario, args.tasks, args.seed, args.epochs, args.shots, args.holdout)
    config = HarnessConfig(profile=profile, backbone_bytes=bundle.backbone_bytes, input_size=bundle.manifest.input_size,
                           seed=args.seed, joint_epochs=args.joint_epochs,
                           unknown_tpr=_unknown_tpr(args, profile.unknown_tpr))
    ctx = MethodContext(config, *load_head_and_anchors(bundle), features.concepts,
                        bundle.manifest.feature_dim)
    results = (open_set.run_open_set(scenario, known, names, ctx, progress=Progress) if open_set_run
               else run(scenario, names, ctx, progress=Progress))
    total_seconds = time.monotonic() - started

    title = _title(args, len(features.concepts))
    print(f"{title}\n")
    print(open_set.table(results) if open_set_run else table(results, args.scenario))
    print(f"\nfeatures: {features.features.shape[0]} images in {feature_seconds:.1f} s "
          f"(cache {cache_folder(cache, bundle, args.data, images)}); total {total_seconds:.1f} s")
    if args.json:
        write_json(args.json, {
            "command": "edgecvm eval " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["eval"] else sys.argv[1:]),
            "title": title,
            "scenario": {"name": args.scenario, "tasks": len(scenario.tasks), "seed": args.seed, "epochs": args.epochs,
                         "shots": args.shots, "holdout": args.holdout, "classes": len(features.concepts),
                         **({"known_classes": [features.concepts[i] for i in known]} if open_set_run else {})},
            "bundle": {"folder": str(args.bundle), "sha256": bundle.sha256},
            "profile": profile.name, "cvm_head_method": CVM_HEAD_METHOD, "device_default_head_method": DEFAULT_METHOD,
            "feature_seconds": feature_seconds, "total_seconds": total_seconds,
            "host": {"python": platform.python_version(), "machine": platform.machine()},
            "results": [r.as_dict() for r in results],
        })
    if args.plot:
        (open_set.plot if open_set_run else plot)(args.plot, results, title)
    return 0


def _title(args: argparse.Namespace, n_classes: int) -> str:
    if args.scenario == "zero-shot":
        return f"zero-shot, {n_classes} classes, {args.holdout} images"
    if args.scenario == open_set.OPEN_SET:
        n_known = round(args.known_fraction * n_classes)
        return (f"open-set, {n_known} known / {n_classes - n_known} unknown classes, {args.tasks} tasks, online "
                f"(1 pass), seed {args.seed}, tested on {args.holdout} images")
    shots = f", {args.shots} shots per class" if args.shots else ""
    passes = "online (1 pass)" if args.epochs == 1 else f"{args.epochs} passes per task"
    return (f"{args.scenario}, {args.tasks} tasks x {n_classes // args.tasks} classes{shots}, {passes}, "
            f"seed {args.seed}, tested on {args.holdout} images")


def _unknown_tpr(args: argparse.Namespace, profile_tpr: float) -> float | None:
    if args.unknown == "off":
        return None
    return profile_tpr if args.unknown_tpr is None else args.unknown_tpr
