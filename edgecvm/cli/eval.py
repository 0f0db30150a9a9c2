"""`edgecvm eval`: the continual-learning benchmark, CVM against its peers on the same frozen features.

Features are extracted once per (backbone, image) into the user's cache folder
($XDG_CACHE_HOME/edgecvm, else ~/.cache/edgecvm; --cache DIR to choose); then
every method learns the scenario's stream and is tested after each task (see
eval/harness.py for the method names and scenarios.py for the protocols).
--data is a Tiny-ImageNet-style zip or folder (train/ + val/) or any folder of
class folders (photos/<concept>/*.jpg, split per class; concept names the
anchor file lacks are embedded for the run). Prints a Markdown table;
``--json`` and ``--plot`` write the full results and the accuracy-vs-tasks
curve, or, for the few-shot scenario over several K, accuracy against K.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path, PurePosixPath

from edgecvm import resources
from edgecvm.cli.common import add_unknown_arguments, positive_int
from edgecvm.cli.progress import Progress
from edgecvm.device.profiles import load_profile
from edgecvm.errors import BadInputError
from edgecvm.eval import open_set
from edgecvm.eval.feature_cache import LabelledImage, cache_folder, load_features
from edgecvm.eval.few_shot_curve import DEFAULT_SHOTS, run_curve
from edgecvm.eval.folder_dataset import DEFAULT_TEST_FRACTION, check_class_sizes, class_counts, list_images
from edgecvm.eval.harness import (
    CVM_HEAD_METHOD,
    DEFAULT_METHODS,
    HarnessConfig,
    MethodContext,
    method_names,
    run,
)
from edgecvm.eval.report import curve_table, plot, plot_curve, table, write_json
from edgecvm.eval.scenarios import HOLDOUTS, SCENARIOS, TestSet, build_scenario
from edgecvm.eval.variants import head_method_names
from edgecvm.eval.vocabulary import anchor_rows, read_wordnet_ids, zero_shot_over
from edgecvm.eval.vocabulary import table as vocabulary_table
from edgecvm.formats.anchors import AnchorSet, load_anchors
from edgecvm.formats.bundle import Bundle, load_bundle, load_head_and_anchors
from edgecvm.formats.head_file import HeadParams
from edgecvm.learning.head_methods import DEFAULT_METHOD
from edgecvm.offline.concept_anchors import anchors_covering

DEFAULT_TASKS = 10  # or one task per class when there are fewer classes


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="continual-learning benchmark: CVM head vs NCM, SLDA, softmax (+replay), joint, on cached features",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--bundle", required=True, help="bundle folder from `edgecvm export`")
    parser.add_argument("--data", required=True, type=Path,
                        help="a folder of class folders (photos/<concept>/*.jpg; the folder names the concept, "
                             "water_lilly -> 'water lilly'), or a zip or folder with train/<class>/ and "
                             "val/<class>/ images (Tiny-ImageNet layout)")
    parser.add_argument("--test-fraction", type=float, metavar="F", default=argparse.SUPPRESS,
                        help=f"class folders: the share of each class's images held out for testing, chosen "
                             f"by file name, the same on every run (default {DEFAULT_TEST_FRACTION})")
    parser.add_argument("--names", type=Path, metavar="FILE",
                        help="class folders: rename concepts, one `folder<TAB>concept name` per line")
    parser.add_argument("--anchors", metavar="NAME|FILE",
                        help="anchor file to use instead of the bundle's: a shipped name (e.g. imagenet-21k) or a "
                             "path, made by the bundle's language model; concept names it lacks are embedded for "
                             "the run (export extra). With --scenario zero-shot: answer among every concept of "
                             "that file, top-1 and top-5 next to the bundle's own anchor file")
    parser.add_argument("--wordnet-ids", type=Path, metavar="TSV",
                        help="zero-shot with --anchors: the WordNet id of each of its anchors (the column headed "
                             "'wnid', a row per anchor; ../shared/data/imagenet-21k-concepts.tsv for imagenet-21k), "
                             "so an image counts as right when the answer is its own class folder's WordNet id; "
                             "without it, by name")
    parser.add_argument("--scenario", choices=(*SCENARIOS, open_set.OPEN_SET), default="class-incremental",
                        help="open-set: teach --known-fraction of the classes, test known against unknown "
                             "(eval/open_set.py)")
    parser.add_argument("--known-fraction", type=float, default=0.5,
                        help="open-set: share of the classes taught (a seeded choice); the rest are unknown")
    parser.add_argument("--tasks", type=positive_int, default=argparse.SUPPRESS,
                        help=f"classes are split into this many tasks (default {DEFAULT_TASKS}, or one per class if fewer)")
    parser.add_argument("--seed", type=int, default=0, help="class order, stream order, replay draws")
    parser.add_argument("--methods",
                        help=f"comma-separated (default {','.join(DEFAULT_METHODS)}; open-set: "
                             f"{','.join(open_set.OPEN_SET_METHODS)}); cvm[:HEAD] and cvm-noreplay[:HEAD] use the device learner with head "
                             f"method HEAD (default {CVM_HEAD_METHOD}; one of {', '.join(head_method_names())}: the "
                             f"device's methods, then research variants only the evaluation runs)")
    parser.add_argument("--shots", type=_shots, metavar="K[,K...]", default=argparse.SUPPRESS,
                        help="few-shot: training images per class; several (the default, "
                             f"{','.join(map(str, DEFAULT_SHOTS))}) give the accuracy-vs-K curve")
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
    broad = args.scenario == "zero-shot" and args.anchors is not None
    if args.wordnet_ids and not broad:
        raise BadInputError("--wordnet-ids goes with --scenario zero-shot and --anchors")
    started = time.monotonic()
    bundle = load_bundle(args.bundle)
    profile = load_profile(args.profile)
    images = list_images(args.data, vars(args).get("test_fraction"), args.names)
    anchor_file = resources.shipped_or_path("anchors", args.anchors, ".anchors.npz") if args.anchors else None
    concepts = [image.concept for image in images]
    head, anchors = _head_and_anchors(bundle, None if broad else anchor_file, concepts)
    table_started = time.monotonic()
    cache = args.cache if "cache" in vars(args) else resources.user_cache_dir()
    features = load_features(bundle, profile, args.data, cache, images, progress=Progress)
    feature_seconds = time.monotonic() - table_started
    check_class_sizes(class_counts(features), str(args.data))  # again: undecodable images are left out
    tasks = vars(args).get("tasks") or min(DEFAULT_TASKS, len(features.concepts))
    if anchor_file is not None and broad:
        test = build_scenario(features, args.scenario, tasks, args.seed, args.epochs, None, args.holdout).test
        return _broad_vocabulary(args, bundle, head, anchors, load_anchors(anchor_file), anchor_file, test,
                                 features.concepts, images)
    shots = vars(args).get("shots") or (DEFAULT_SHOTS if args.scenario == "few-shot" else None)
    config = HarnessConfig(profile=profile, backbone_bytes=bundle.backbone_bytes, input_size=bundle.manifest.input_size,
                           seed=args.seed, joint_epochs=args.joint_epochs,
                           unknown_tpr=_unknown_tpr(args, profile.unknown_tpr))
    ctx = MethodContext(config, head, anchors, features.concepts, bundle.manifest.feature_dim)
    document: dict[str, object] = {}
    if args.scenario == "few-shot" and shots is not None and len(shots) > 1:
        points = run_curve(features, shots, names, ctx, tasks, args.seed, args.epochs, args.holdout, Progress)
        shots = tuple(p.shots for p in points)
        title = _title(args, tasks, shots, len(features.concepts))
        print(f"{title}\n\nfinal accuracy (%) against K, training images per class:\n")
        print(curve_table(points))
        document["curve"] = [p.as_dict() for p in points]
        if args.plot:
            plot_curve(args.plot, points, title)
    elif open_set_run:
        scenario, known = open_set.build_open_set(features, args.known_fraction, tasks, args.seed, args.holdout)
        results = open_set.run_open_set(scenario, known, names, ctx, progress=Progress)
        title = _title(args, tasks, shots, len(features.concepts))
        print(f"{title}\n")
        print(open_set.table(results))
        document["results"] = [r.as_dict() for r in results]
        document["known_classes"] = [features.concepts[i] for i in known]
        if args.plot:
            open_set.plot(args.plot, results, title)
    else:
        scenario = build_scenario(features, args.scenario, tasks, args.seed, args.epochs, shots[0] if shots else None,
                                  args.holdout)
        results = run(scenario, names, ctx, progress=Progress)
        title = _title(args, tasks, shots, len(features.concepts))
        print(f"{title}\n")
        print(table(results, args.scenario))
        document["results"] = [r.as_dict() for r in results]
        if args.plot:
            plot(args.plot, results, title)
    total_seconds = time.monotonic() - started
    print(f"\nfeatures: {features.features.shape[0]} images in {feature_seconds:.1f} s "
          f"(cache {cache_folder(cache, bundle, args.data, images)}); total {total_seconds:.1f} s")
    if args.json:
        write_json(args.json, {
            "command": "edgecvm eval " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["eval"] else sys.argv[1:]),
            "title": title,
            "scenario": {"name": args.scenario, "tasks": 0 if args.scenario == "zero-shot" else tasks, "seed": args.seed, "epochs": args.epochs,
                         "shots": list(shots) if shots else None, "holdout": args.holdout,
                         "classes": len(features.concepts), "concepts": list(features.concepts)},
            "bundle": {"folder": str(args.bundle), "sha256": bundle.sha256},
            "anchors": {"file": str(anchor_file or bundle.anchors_path), "concepts": len(anchors)},
            "profile": profile.name, "cvm_head_method": CVM_HEAD_METHOD, "device_default_head_method": DEFAULT_METHOD,
            "feature_seconds": feature_seconds, "total_seconds": total_seconds,
            "host": {"python": platform.python_version(), "machine": platform.machine()},
            **document,
        })
    return 0


def _shots(text: str) -> tuple[int, ...]:
    """``5`` or ``1,2,5,10,20``: distinct whole numbers >= 1, kept in increasing order."""
    values = sorted({positive_int(part.strip()) for part in text.split(",") if part.strip()})
    if not values:
        raise argparse.ArgumentTypeError(f"expected K or K,K,... (e.g. 1,2,5,10,20), got {text!r}")
    return tuple(values)


def _head_and_anchors(bundle: Bundle, anchor_file: Path | None, concepts: list[str]) -> tuple[HeadParams, AnchorSet]:
    """The bundle's head, and its anchors (or ``anchor_file``'s) with every dataset concept embedded.

    Only the anchors change with the concepts: the backbone and its cached features stay as they are."""
    head, anchors = load_head_and_anchors(bundle)
    source: Path = bundle.anchors_path
    if anchor_file is not None:
        given = load_anchors(anchor_file)
        if (given.model, given.dim) != (anchors.model, anchors.dim):
            raise BadInputError(f"{anchor_file}: anchors of model {given.model} ({given.dim}-d), but the bundle's head "
                                f"maps into the space of {anchors.model} ({anchors.dim}-d); use an anchor file built "
                                "with that model (`edgecvm anchors extend`)")
        anchors, source = given, anchor_file
    return head, anchors_covering(anchors, concepts, source, progress=Progress)


def _broad_vocabulary(args: argparse.Namespace, bundle: Bundle, head: HeadParams, own: AnchorSet, broad: AnchorSet,
                      path: Path, test: TestSet, concepts: tuple[str, ...], images: list[LabelledImage]) -> int:
    """Zero-shot top-1/top-5 among the bundle's anchors and among every anchor of another file."""
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


def _title(args: argparse.Namespace, tasks: int, shots: tuple[int, ...] | None, n_classes: int) -> str:
    if args.scenario == "zero-shot":
        return f"zero-shot, {n_classes} classes, {args.holdout} images"
    if args.scenario == open_set.OPEN_SET:
        n_known = round(args.known_fraction * n_classes)
        return (f"open-set, {n_known} known / {n_classes - n_known} unknown classes, {tasks} tasks, online "
                f"(1 pass), seed {args.seed}, tested on {args.holdout} images")
    shots_text = ""
    if shots:
        shots_text = f", {shots[0]} shots per class" if len(shots) == 1 else f", K = {', '.join(map(str, shots))}"
    passes = "online (1 pass)" if args.epochs == 1 else f"{args.epochs} passes per task"
    per_task = f"{n_classes // tasks}" + (f"-{n_classes // tasks + 1}" if n_classes % tasks else "")
    return (f"{args.scenario}, {tasks} tasks x {per_task} classes{shots_text}, {passes}, "
            f"seed {args.seed}, tested on {args.holdout} images")


def _unknown_tpr(args: argparse.Namespace, profile_tpr: float) -> float | None:
    if args.unknown == "off":
        return None
    return profile_tpr if args.unknown_tpr is None else args.unknown_tpr
