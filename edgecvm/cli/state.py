"""`edgecvm state show DIR` (what a device knows) and `edgecvm state merge A B ... --out DIR` (what several devices
were taught, merged into one state dir)."""

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


def cmd_show(args: argparse.Namespace) -> int:
    from edgecvm.device.state_summary import describe_state

    summary = describe_state(args.state)
    resumes = None
    if args.bundle is not None:  # as the device would open it: bundle, identity, new concepts, memory plan
        from edgecvm.device.device import open_device
        from edgecvm.device.memory_plan import MB

        with open_device(args.bundle, args.profile, args.state, read_only=True) as device:
            resumes = {"bundle": args.bundle, "profile": device.profile.name,
                       "memory_plan_mb": round(device.plan.total_bytes / MB, 1),
                       "budget_mb": device.profile.memory_budget_mb}
    if args.json:
        print(json.dumps({**summary.as_dict(), "resumes": resumes}))
        return 0
    s = summary
    print(f"{s.read_from}: {s.head} head, {len(s.concepts)} concept(s), {s.updates:,} updates "
          f"(written {s.written_at}, {s.bytes / 1e6:.1f} MB{'; previous checkpoint kept' if s.previous_checkpoint else ''})")
    if s.latest_unusable:
        print(f"  the latest checkpoint is unusable, the device resumes this one: {s.latest_unusable}")
    if s.concepts:
        width = max(len("concept"), *(len(c.name) for c in s.concepts))
        merged = s.merged_samples is not None
        print(f"  {'concept':<{width}}  taught here{'  in the statistics' if merged else ''}")
        for c in s.concepts:
            print(f"  {c.name:<{width}}  {c.taught_here:>11,}{f'  {c.in_statistics:>17,}' if merged else ''}")
    if s.merged_samples is not None:
        print(f"  merged with other devices: {s.own_samples:,} of the statistics' {s.merged_samples:,} samples "
              "were taught here")
    print(f"  frames seen {s.frames_seen:,} ({s.bad_frames:,} unreadable, {s.skipped_nonfinite:,} skipped for "
          f"NaN/Inf); replay buffer {s.replay_samples:,} samples")
    if s.new_concepts:
        print(f"  names embedded on the device: {', '.join(s.new_concepts)}")
    print(f"  learned with bundle {s.bundle_sha256[:12]}…, anchor file {s.anchors_sha256[:12]}… "
          f"(edgecvm {s.edgecvm_version})")
    if resumes is not None:
        print(f"  resumes with {args.bundle} on profile {resumes['profile']}: memory plan "
              f"{resumes['memory_plan_mb']} MB of {resumes['budget_mb']} MB")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "state", help="show what a state dir holds, or merge several into one (no server)",
        description="Work on learner state dirs (made by `edgecvm learn`, `serve` or open_device).")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = actions.add_parser(
        "show", help="what a state dir holds: concepts and examples, progress, the bundle it belongs to",
        description="Show what a device learned, from its state dir alone (the checksum verified; when the latest "
        "checkpoint is unusable, the previous one, as the device would resume): each concept with the examples "
        "taught here and, after a fleet merge, those its head is solved from; updates and frames seen; the replay "
        "buffer; names embedded on the device; the bundle and anchor file it was learned with. With --bundle, also "
        "open it as the device would (bundle hashes, memory plan under --profile): exit 2 or 3 when it would not "
        "resume.",
        epilog="example: edgecvm state show /var/lib/edgecvm/state --bundle /opt/edgecvm/bundle --profile "
        "raspberry-pi-4")
    show.add_argument("state", metavar="STATE_DIR", help="the state dir (made by `edgecvm learn`, `serve` or "
                      "open_device)")
    show.add_argument("--bundle", help="also check that it resumes with this bundle")
    show.add_argument("--profile", default=DEFAULT_PROFILE,
                      help=f"with --bundle: the device's profile, whose memory budget the plan is checked against "
                      f"(default {DEFAULT_PROFILE})")
    show.add_argument("--json", action="store_true", help="print everything as one JSON object")
    show.set_defaults(func=cmd_show)
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
