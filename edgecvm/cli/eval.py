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
from pathlib import Path, PurePosixPath

from edgecvm import resources
from edgecvm.cli.common import positive_int
from edgecvm.cli.progress import Progress
from edgecvm.device.profiles import load_profile
from edgecvm.errors import BadInputError
from edgecvm.eval.feature_cache import LabelledImage, cache_folder, list_dataset, load_features
from edgecvm.eval.harness import (
    CVM_HEAD_METHOD,
    DEFAULT_METHODS,
    HarnessConfig,
    MethodContext,
    method_names,
    run,
)
from edgecvm.eval.report import plot, table, write_json
from edgecvm.eval.scenarios import HOLDOUTS, SCENARIOS, TestSet, build_scenario
from edgecvm.eval.variants import head_method_names
from edgecvm.eval.vocabulary import anchor_rows, read_wordnet_ids, zero_shot_over
from edgecvm.eval.vocabulary import table as vocabulary_table
from edgecvm.formats.anchors import load_anchors
from edgecvm.formats.bundle import Bundle, load_bundle, load_head_and_anchors
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
    parser.add_argument("--scenario", choices=SCENARIOS, default="class-incremental")
    parser.add_argument("--tasks", type=positive_int, default=10, help="classes are split into this many tasks")
    parser.add_argument("--seed", type=int, default=0, help="class order, stream order, replay draws")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help=f"comma-separated; cvm[:HEAD] and cvm-noreplay[:HEAD] use the device learner with head "
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
    parser.add_argument("--anchors", metavar="NAME|FILE",
                        help="zero-shot only: also answer among every concept of this anchor file (a shipped name, "
                             "e.g. imagenet-21k, or a path; same language model as the bundle's) and report top-1 "
                             "and top-5 next to the bundle's own anchor file")
    parser.add_argument("--wordnet-ids", type=Path, metavar="TSV",
                        help="with --anchors: the WordNet id of each of its anchors (the column headed 'wnid', a row per anchor; "
                             "../shared/data/imagenet-21k-concepts.tsv for imagenet-21k), so an image counts as right "
                             "when the answer is its own class folder's WordNet id; without it, by name")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write every figure as JSON")
    parser.add_argument("--plot", type=Path, metavar="FILE.png", help="write the accuracy-vs-tasks plot")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    names = method_names(args.methods)
    if (args.anchors or args.wordnet_ids) and (args.scenario != "zero-shot" or not args.anchors):
        raise BadInputError("--anchors (and --wordnet-ids with it) go with --scenario zero-shot")
    started = time.monotonic()
    bundle = load_bundle(args.bundle)
    profile = load_profile(args.profile)
    images = list_dataset(args.data)
    table_started = time.monotonic()
    cache = args.cache if "cache" in vars(args) else resources.user_cache_dir()
    features = load_features(bundle, profile, args.data, cache, images, progress=Progress)
    feature_seconds = time.monotonic() - table_started
    scenario = build_scenario(features, args.scenario, args.tasks, args.seed, args.epochs, args.shots, args.holdout)
    if args.anchors or args.wordnet_ids:
        return _broad_vocabulary(args, bundle, scenario.test, features.concepts, images)
    config = HarnessConfig(profile=profile, backbone_bytes=bundle.backbone_bytes, input_size=bundle.manifest.input_size,
                           seed=args.seed, joint_epochs=args.joint_epochs)
    ctx = MethodContext(config, *load_head_and_anchors(bundle), features.concepts,
                        bundle.manifest.feature_dim)
    results = run(scenario, names, ctx, progress=Progress)
    total_seconds = time.monotonic() - started

    title = _title(args, len(features.concepts))
    print(f"{title}\n")
    print(table(results, args.scenario))
    print(f"\nfeatures: {features.features.shape[0]} images in {feature_seconds:.1f} s "
          f"(cache {cache_folder(cache, bundle, args.data, images)}); total {total_seconds:.1f} s")
    if args.json:
        write_json(args.json, {
            "command": "edgecvm eval " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["eval"] else sys.argv[1:]),
            "title": title,
            "scenario": {"name": args.scenario, "tasks": len(scenario.tasks), "seed": args.seed, "epochs": args.epochs,
                         "shots": args.shots, "holdout": args.holdout, "classes": len(features.concepts)},
            "bundle": {"folder": str(args.bundle), "sha256": bundle.sha256},
            "profile": profile.name, "cvm_head_method": CVM_HEAD_METHOD, "device_default_head_method": DEFAULT_METHOD,
            "feature_seconds": feature_seconds, "total_seconds": total_seconds,
            "host": {"python": platform.python_version(), "machine": platform.machine()},
            "results": [r.as_dict() for r in results],
        })
    if args.plot:
        plot(args.plot, results, title)
    return 0


def _broad_vocabulary(args: argparse.Namespace, bundle: Bundle, test: TestSet, concepts: tuple[str, ...],
                      images: list[LabelledImage]) -> int:
    """``--anchors``: zero-shot top-1/top-5 among the bundle's anchors and among every anchor of another file."""
    head, own = load_head_and_anchors(bundle)
    path = resources.shipped_or_path("anchors", args.anchors, ".anchors.npz")
    broad = load_anchors(path)
    if (broad.model, broad.dim) != (own.model, own.dim):
        raise BadInputError(f"{path}: made by {broad.model} ({broad.dim}-d), the bundle's anchors by {own.model} "
                            f"({own.dim}-d): not one concept space; use anchors made by the bundle's model")
    folders = {image.concept: PurePosixPath(image.origin).parent.name for image in images}
    ids = read_wordnet_ids(args.wordnet_ids) if args.wordnet_ids else None
    results = [
        zero_shot_over(head, own, bundle.manifest.anchors_file, test, concepts, anchor_rows(concepts, own), "name"),
        zero_shot_over(head, broad, path.name, test, concepts, anchor_rows(concepts, broad, folders, ids),
                       "WordNet id" if ids else "name"),
    ]
    print(f"zero-shot before any teaching, {len(concepts)} classes, {args.holdout} images\n")
    print(vocabulary_table(results))
    for result in results:
        if result.missing:
            print(f"\nnot in {result.anchors}: {', '.join(result.missing)} (their images count as wrong)")
    if args.json:
        write_json(args.json, {"bundle": {"folder": str(args.bundle), "sha256": bundle.sha256},
                               "holdout": args.holdout, "results": [r.as_dict() for r in results]})
    return 0


def _title(args: argparse.Namespace, n_classes: int) -> str:
    if args.scenario == "zero-shot":
        return f"zero-shot, {n_classes} classes, {args.holdout} images"
    shots = f", {args.shots} shots per class" if args.shots else ""
    passes = "online (1 pass)" if args.epochs == 1 else f"{args.epochs} passes per task"
    return (f"{args.scenario}, {args.tasks} tasks x {n_classes // args.tasks} classes{shots}, {passes}, "
            f"seed {args.seed}, tested on {args.holdout} images")
