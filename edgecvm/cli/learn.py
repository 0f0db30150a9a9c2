"""`edgecvm learn`: teach concepts from a stream, checkpointing into a state dir that later runs resume.

The loop itself is ``device.learn_loop.LearnLoop``; this module adds the
options, the progress bar, signals and the output. The state is checkpointed
every ``--checkpoint-every`` updates, at the end, before exiting on a lost
camera (exit 4) and on SIGINT/SIGTERM (exit 130 once the checkpoint is on
disk). ``--json`` prints one line per checkpoint (it describes the file just
written) and a summary line.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from typing import TYPE_CHECKING

from edgecvm.cli.common import (
    HEAD_METHOD_CHOICES,
    StopOnSignal,
    add_device_arguments,
    add_realtime_argument,
    add_stream_arguments,
    json_line,
    positive_int,
    stream_from_args,
)
from edgecvm.cli.progress import Progress

if TYPE_CHECKING:
    from edgecvm.device.learn_loop import FrameReport


def cmd_learn(args: argparse.Namespace) -> int:
    from edgecvm.device.device import open_device
    from edgecvm.device.learn_loop import CheckpointReport, LearnLoop
    from edgecvm.device.memory_plan import rss_parts
    from edgecvm.device.streams import source_kind
    from edgecvm.errors import BadInputError, InterruptedAfterCheckpoint, StreamLostError

    memory = {"start-up": rss_parts()}  # RSS and its parts after each phase: where the peak happens (bench)

    if args.label is None and not source_kind(args.stream).labelled:  # before a camera is opened
        raise BadInputError(f"{args.stream} gives unlabelled frames; say what they show with --label CONCEPT")
    device = open_device(args.bundle, args.profile, args.state, head_method=args.head_method,
                         checkpoint_every=args.checkpoint_every, tune_process=True, frame_size=args.camera_size)
    memory["session"] = rss_parts()
    if args.label is not None:  # a name the anchor file lacks: embedded now, or an error listing close names
        for name in device.add_concepts([args.label]):
            print(f"new concept {name!r}: embedded by the bundle's text encoder, kept in {args.state}",
                  file=sys.stderr)

    def report_checkpoint(report: CheckpointReport) -> None:
        if args.json:
            print(json_line({"event": "checkpoint", **dataclasses.asdict(report)}), flush=True)

    with stream_from_args(args, device, realtime=args.realtime) as stream, StopOnSignal(stream) as stop, \
            Progress(stream.total, "learn", unit="frames") as bar:
        if args.label is None and not stream.labels:
            raise BadInputError(f"{args.stream} gives unlabelled frames; say what they show with --label CONCEPT")
        loop = LearnLoop(device, stream, args.label, should_stop=lambda: stop.stopped,
                         on_frame=lambda r: _draw(bar, r), on_checkpoint=report_checkpoint)
        try:
            loop.run()
            memory["learning"] = rss_parts()
        except StreamLostError:
            loop.finish()  # keep what was learned before the camera went away
            _print_summary(loop.summary("stream lost"), args.json)
            raise
        loop.finish()
    memory["checkpoint"] = rss_parts()
    summary = {**loop.summary(stop.name), "memory": memory if None not in memory.values() else None}
    _print_summary(summary, args.json)
    if stop.stopped:
        checkpointer = loop.checkpointer
        saved = "state checkpointed" if checkpointer.last_saved_update == device.learner.counters.updates \
            else "THE FINAL CHECKPOINT FAILED (see the warning above)"
        raise InterruptedAfterCheckpoint(f"interrupted by {stop.name} after {loop.frames} frames; {saved} at update "
                                         f"{checkpointer.last_saved_update} in {summary['state']}")
    return 0


def _draw(bar: Progress, report: FrameReport) -> None:
    bar.update(1, loss=report.loss, known=report.known)


def _print_summary(summary: dict[str, object], as_json: bool) -> None:
    if as_json:
        print(json_line(summary), flush=True)
        return
    known = list(summary["known"])  # type: ignore[call-overload]
    loss = summary["loss"]
    loss_text = f"{loss:.3f}" if isinstance(loss, float) and math.isfinite(loss) else "n/a"
    print(f"learned from {summary['frames']} frames in {summary['elapsed_s']:.1f} s ({summary['frames_per_s']} frames/s): "
          f"{summary['updates']} updates, {summary['bad_frames']} bad frames skipped, "
          f"{summary['skipped_nonfinite']} non-finite updates skipped; running loss {loss_text}")
    print(f"known concepts ({len(known)}): {', '.join(known)}")
    print(f"state: {summary['state']} (update {summary['saved_update']}, {summary['checkpoints']} checkpoints, "
          f"{summary['checkpoint_failures']} failed); peak RSS {summary['peak_rss_mb']} MB")
    sys.stdout.flush()


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "learn", help="teach concepts from a stream into a state dir (resumes it)",
        description="Teach the device: every frame of --stream is an example of --label, or of the label its "
        "source gives (sub-folder of a folder/zip, manifest column). The projection head learns with latent replay; "
        "the state dir is checkpointed atomically and resumed on the next run. Exit codes: 0 ok, 2 bad input, "
        "3 memory budget exceeded, 4 camera lost, 130 interrupted (after a clean checkpoint).")
    add_device_arguments(parser)
    add_stream_arguments(parser)
    add_realtime_argument(parser)
    parser.add_argument("--label", metavar="CONCEPT",
                        help="every frame shows this concept (teach mode; overrides the source's labels); a name "
                        "the anchor file lacks is embedded on the device when the bundle carries the text encoder "
                        "(export --text-encoder)")
    parser.add_argument("--state", required=True, metavar="DIR", help="state dir: created, or resumed when it exists")
    parser.add_argument("--checkpoint-every", type=positive_int, metavar="N",
                        help="updates between checkpoints (default: the profile's checkpoint_every)")
    parser.add_argument("--head-method", choices=HEAD_METHOD_CHOICES, default=None,
                        help="how the head learns: lda (closed-form discriminant from running class statistics; "
                             "forgets nothing) or sgd (gradient steps with replay; lighter). Default: the state's, "
                             "else the profile's head_method (lda in every shipped profile); fixed once a state exists")
    parser.add_argument("--json", action="store_true", help="one JSON line per checkpoint and a summary line on stdout")
    parser.set_defaults(func=cmd_learn)
