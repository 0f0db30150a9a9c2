"""`edgecvm learn`: teach concepts from a stream, checkpointing into a state dir that later runs resume.

One frame, one update: backbone features, then a head step mixed with latent
replay. Frames that cannot be decoded are skipped with a warning and counted.
The state is checkpointed every ``--checkpoint-every`` updates, at the end,
before exiting on a lost camera (exit 4) and on SIGINT/SIGTERM (exit 130
once the checkpoint is on disk). ``--json`` prints one line per checkpoint
(it describes the file just written) and a summary line.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
import time

from edgecvm.cli.progress import Progress
from edgecvm.device.device import (
    Device,
    StopOnSignal,
    add_stream_arguments,
    check_labels,
    json_line,
    open_device,
    positive_int,
    stream_from_args,
)
from edgecvm.device.memory_plan import MB, RssMonitor, peak_rss_bytes, replay_shrinker
from edgecvm.device.state import Checkpointer, state_path
from edgecvm.device.streams import Stream, source_kind
from edgecvm.device.update_thread import Done, UpdateThread
from edgecvm.errors import BadInputError, InterruptedAfterCheckpoint, StreamLostError
from edgecvm.learning.head_methods import HEAD_METHODS

log = logging.getLogger("edgecvm.learn")
_LOSS_SMOOTHING = 0.05  # weight of the newest loss in the reported running mean


class LearnRun:
    """One `learn` invocation: the loop, its counters and what it reports.

    Updates run on ``UpdateThread``'s worker, up to ``update_thread.DEPTH``
    queued, while the backbone reads the next frames; everything that touches
    the learner between updates (RSS check, replay shrink, checkpoint and its
    JSON line) runs there too, right after an update, via ``maybe_checkpoint``.
    """

    def __init__(self, device: Device, stream: Stream, label: str | None, state_dir: str, checkpoint_every: int,
                 as_json: bool) -> None:
        self.device, self.stream, self.label, self.state_dir, self.as_json = device, stream, label, state_dir, as_json
        learner = device.learner
        self.checkpointer = Checkpointer(state_dir, learner, device.identity, checkpoint_every)
        self.monitor = RssMonitor(device.profile.memory_budget_mb * MB, replay_shrinker(learner.replay))
        self.start_updates = learner.counters.updates
        self.frames = self.bad_frames = 0
        self.loss = math.nan
        self.started = time.monotonic()
        self._saved_counters: dict[str, object] | None = None  # counters in the newest checkpoint of this run

    def run(self, stop: StopOnSignal) -> None:
        learner = self.device.learner
        with Progress(self.stream.total, "learn", unit="frames") as bar, UpdateThread(learner, self) as updates:
            for frame in self.stream:
                self.frames += 1
                if frame.error is not None or frame.image is None:
                    self.bad_frames += 1
                    learner.count_bad_frame()
                    log.warning("skipping %s: %s", frame.origin, frame.error)
                else:
                    features = self.device.extractor.extract([frame.image])
                    self._note(updates.submit(features, [self.label or frame.label], frame.origin))
                bar.update(1, loss=self.loss, known=len(learner.known))
                if stop.signum is not None:
                    break
            self._note(updates.wait())

    def _note(self, done: Done) -> None:
        for origin, result in done:
            if result.skipped:
                log.warning("%s: non-finite features or loss; update skipped", origin)
            elif math.isnan(self.loss):
                self.loss = result.loss
            else:
                self.loss += _LOSS_SMOOTHING * (result.loss - self.loss)

    def maybe_checkpoint(self) -> None:
        """After each update, on the update worker (``UpdateThread`` calls it): RSS check, periodic checkpoint."""
        self.monitor.tick()
        if self.checkpointer.maybe_checkpoint():
            self.report_checkpoint()

    def checkpoint(self) -> None:
        """Checkpoint now unless the newest file already holds exactly this state (no update may be pending)."""
        if self._saved_counters != dataclasses.asdict(self.device.learner.counters) and self.checkpointer.checkpoint():
            self.report_checkpoint()

    def report_checkpoint(self) -> None:
        """The JSON line describes the file just written, so it is printed only once the file is on disk."""
        self._saved_counters = dataclasses.asdict(self.device.learner.counters)
        if self.as_json:
            counters = self.device.learner.counters
            print(json_line({"event": "checkpoint", "updates": counters.updates, "frames": counters.frames_seen,
                             "loss": self.loss, "known": len(self.device.learner.known),
                             "path": str(state_path(self.state_dir)), "sha256": self.checkpointer.last_sha256}),
                  flush=True)

    def summary(self, interrupted_by: str) -> dict[str, object]:
        learner = self.device.learner
        elapsed = time.monotonic() - self.started
        return {
            "event": "summary", "frames": self.frames, "bad_frames": self.bad_frames,
            "updates": learner.counters.updates - self.start_updates, "updates_total": learner.counters.updates,
            "skipped_nonfinite": learner.counters.skipped_nonfinite, "loss": self.loss, "known": list(learner.known),
            "elapsed_s": round(elapsed, 3), "frames_per_s": round(self.frames / elapsed, 2) if elapsed > 0 else None,
            "checkpoints": self.checkpointer.written, "checkpoint_failures": self.checkpointer.failed,
            "saved_update": self.checkpointer.last_saved_update, "state": str(state_path(self.state_dir)),
            "peak_rss_mb": round(peak_rss_bytes() / MB, 1), "interrupted_by": interrupted_by or None,
        }


def cmd_learn(args: argparse.Namespace) -> int:
    if args.label is None and not source_kind(args.stream).labelled:  # before a camera is opened
        raise BadInputError(f"{args.stream} gives unlabelled frames; say what they show with --label CONCEPT")
    device = open_device(args.bundle, args.profile, args.state, learning=True, method=args.head_method)
    if args.label is not None:
        device.learner.anchors.index_of(args.label)  # unknown concept: error listing close names, before any frame
    with stream_from_args(args, labels_from=args.labels_from) as stream:
        if args.label is None:
            if not stream.labels:
                raise BadInputError(f"{args.stream} gives unlabelled frames; say what they show with --label CONCEPT")
            check_labels(stream, device)
        every = args.checkpoint_every or device.profile.checkpoint_every
        run = LearnRun(device, stream, args.label, args.state, every, args.json)
        with StopOnSignal(stream) as stop:
            try:
                run.run(stop)
            except StreamLostError:
                run.checkpoint()  # keep what was learned before the camera went away
                _print_summary(run.summary("stream lost"), args.json)
                raise
            run.checkpoint()
    summary = run.summary(stop.name)
    _print_summary(summary, args.json)
    if stop.signum is not None:
        saved = "state checkpointed" if run.checkpointer.last_saved_update == device.learner.counters.updates \
            else "THE FINAL CHECKPOINT FAILED (see the warning above)"
        raise InterruptedAfterCheckpoint(f"interrupted by {stop.name} after {run.frames} frames; {saved} at update "
                                         f"{run.checkpointer.last_saved_update} in {summary['state']}")
    return 0


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
    parser.add_argument("--bundle", required=True, help="bundle folder from `edgecvm export`")
    add_stream_arguments(parser)
    labels = parser.add_mutually_exclusive_group()
    labels.add_argument("--label", metavar="CONCEPT", help="every frame shows this concept (teach mode)")
    labels.add_argument("--labels-from", choices=("dirs", "manifest"),
                        help="insist on labels from sub-folders (dirs) or the manifest; default: whatever the source has")
    parser.add_argument("--state", required=True, metavar="DIR", help="state dir: created, or resumed when it exists")
    parser.add_argument("--profile", required=True, help="device profile name (edgecvm/resources/profiles/) or YAML path")
    parser.add_argument("--checkpoint-every", type=positive_int, metavar="N",
                        help="updates between checkpoints (default: the profile's checkpoint_every)")
    parser.add_argument("--head-method", choices=sorted(HEAD_METHODS), default=None,
                        help="how the head learns (default: the state's, else the profile's head_method, lda unless "
                             "the profile says otherwise); fixed once a state exists")
    parser.add_argument("--json", action="store_true", help="one JSON line per checkpoint and a summary line on stdout")
    parser.set_defaults(func=cmd_learn)
