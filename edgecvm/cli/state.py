"""`edgecvm state merge A B ... --out DIR`: what several devices were taught, merged into one state dir."""

from __future__ import annotations

import argparse
import json

from edgecvm.cli.common import DEFAULT_PROFILE


def cmd_merge(args: argparse.Namespace) -> int:
    from edgecvm.device.state_merge import merge_states

    report = merge_states(args.bundle, args.states, args.out, profile=args.profile)
    if args.json:
        print(json.dumps(report.as_dict()))
    else:
        first, own = next(iter(report.own_samples.items()))  # the device that keeps the result
        print(f"{report.out}: {len(report.concepts)} concepts from {report.samples:,} samples of "
              f"{len(report.own_samples)} devices ({own:,} of them taught to {first} itself)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "state", help="merge what several devices learned into one state dir (no server)",
        description="Work on learner state dirs (made by `edgecvm learn`, `serve` or open_device).")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    merge = actions.add_parser(
        "merge", help="merge the statistics several devices learned into the first one's state",
        description="Merge what several devices were taught (default lda head) into one state dir, exactly: its "
        "head is solved from the class statistics of every sample each device was taught itself, as if one device "
        "had seen them all. The first state is the device that uses the result: its replay buffer, counters and "
        "own statistics are kept, so it goes on learning, and merging again later (with the same or newer copies) "
        "never counts a sample twice. Every input must come from the same bundle; a state that is corrupt, from "
        "another bundle, learned with the sgd head, or whose statistics no device could have learned is refused "
        "by name and nothing is written.",
        epilog="example: edgecvm state merge --bundle bundle barn1-state barn2-state barn3-state --out barn1-state")
    merge.add_argument("states", nargs="+", metavar="STATE_DIR",
                       help="the state dirs to merge, the device that keeps the result first (at least two)")
    merge.add_argument("--out", required=True, metavar="DIR",
                       help="where to write the merged state: the first state dir (the previous checkpoint is kept "
                       "as state.npz.prev) or a dir without a state")
    merge.add_argument("--bundle", required=True, help="the bundle every state was learned with")
    merge.add_argument("--profile", default=DEFAULT_PROFILE,
                       help=f"the first device's profile: sizes its replay buffer as when it resumes (default "
                       f"{DEFAULT_PROFILE})")
    merge.add_argument("--json", action="store_true", help="print the result as one JSON object")
    merge.set_defaults(func=cmd_merge)
