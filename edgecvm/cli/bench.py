"""`edgecvm bench`: will it fit, and how fast does it run? Measured on this machine, per device profile.

A thin shell over ``edgecvm.bench.run.run_bench`` (what is measured, and how,
is described there): parses the options, shows progress on stderr, prints
the table on stdout and writes ``--json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edgecvm.bench.report import markdown_table, render_report
from edgecvm.bench.run import default_bundle, run_bench
from edgecvm.cli.common import frame_size, positive_int
from edgecvm.cli.progress import Progress
from edgecvm.device.frame_size import CAPTURE_SIZE
from edgecvm.device.profiles import available_profiles, load_profile
from edgecvm.errors import BadInputError
from edgecvm.formats.bundle import load_bundle
from edgecvm.learning.head_methods import HEAD_METHODS


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cmd_bench(args: argparse.Namespace) -> int:
    if args.all_profiles and args.profile:
        raise BadInputError("give --profile NAME or --all-profiles, not both")
    names = available_profiles() if args.all_profiles else [args.profile or "host"]
    profiles = [load_profile(name) for name in names]  # every profile validated before anything runs
    bundles = [load_bundle(path) for path in (args.bundle or [default_bundle(_log)])]
    report = run_bench(profiles, bundles, args.stream, args.frames, args.repeat, not args.no_torch_ref,
                       args.head_method, progress=Progress, log=_log, tune_process=True, frame_size=args.frame_size)
    print(render_report(report))
    if args.markdown:
        print("\n" + markdown_table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nJSON written to {args.json}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "bench", help="measure latency, frames/s and memory per device profile",
        description="Measure, on this machine and under a device profile's threads, input size and precision: "
        "per-stage latency (p50/p95), the backbone alone and predict and learn frames/s side by side (ratios, CPU "
        "seconds per frame), latency from a frame's arrival to its answer at 30 frames/s, learn's peak RSS (child "
        "process) split into anonymous and file-backed parts, with the phase of the peak, judged against the "
        "profile's memory budget (PASS/FAIL), cold start to the first prediction, a torch reference "
        "learner on the same weights (with the export extra), and a FLOPs-based estimate for the real device "
        "(labelled estimate). Prints a table; --json FILE writes the same numbers (keys in docs/benchmarks.md).")
    parser.add_argument("--bundle", action="append", metavar="DIR",
                        help="bundle from `edgecvm export`; repeat to give one per input size/precision, each profile "
                        "uses the closest (default: a 224 px bundle in ~/.cache/edgecvm/bundles, exported on first use)")
    parser.add_argument("--profile", help="device profile name or YAML path (default host)")
    parser.add_argument("--all-profiles", action="store_true", help="every shipped profile (`edgecvm profiles list`)")
    parser.add_argument("--frames", type=positive_int, default=200, metavar="N",
                        help="frames per measurement (default 200; the stream repeats if it has fewer)")
    parser.add_argument("--stream", default="camera", metavar="SRC",
                        help="labelled frames: 'camera' (default: the built-in sample at --frame-size, as a camera "
                        "delivers, written once to ~/.cache/edgecvm/bench), 'sample' (the 64 px sample itself), "
                        "or a folder of class sub-folders, a zip or a manifest. The camera-rate latency always plays "
                        "the sample at --frame-size as a 30 frames/s video (camera extra)")
    parser.add_argument("--frame-size", type=frame_size, default=CAPTURE_SIZE, metavar="WxH",
                        help="size of the generated camera frames and video, e.g. 1280x720 or 1920x1080 "
                        f"(default {CAPTURE_SIZE[0]}x{CAPTURE_SIZE[1]}; each size is written once, 15-55 MB for "
                        "640x480-1920x1080)")
    parser.add_argument("--repeat", type=positive_int, default=1, metavar="R",
                        help="rounds of the backbone alone and the child runs (predict, learn, torch reference), "
                        "side by side; frames/s are medians, ratios the median of each round's own, peak RSS the "
                        "maximum (default 1; make bench uses 3)")
    parser.add_argument("--head-method", choices=list(HEAD_METHODS), default=None,
                        help="how learn's head learns, as `edgecvm learn --head-method` (default: learn's default); "
                        "the torch reference always trains the gradient head with Adam")
    parser.add_argument("--no-torch-ref", action="store_true", help="skip the torch reference learner")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    parser.add_argument("--markdown", action="store_true", help="also print the summary as a Markdown table")
    parser.set_defaults(func=cmd_bench)
