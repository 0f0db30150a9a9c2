"""What `edgecvm learn` and `edgecvm predict` share: opening the device side and the stream options.

``open_device`` loads, in an order that fails fast and cheap: the profile, the
bundle (every sha256 verified), the head and anchors it carries, the learner
(resumed from a state dir, fresh, or the bundle's initial head), then checks
the memory plan against the profile's budget (exit 3 with the table) *before*
the ONNX Runtime session, the one big allocation, is created.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import threading
from dataclasses import dataclass
from typing import Any

from edgecvm.device.camera import Backoff
from edgecvm.device.memory_plan import MemoryPlan, plan_for_learner
from edgecvm.device.process_tuning import (
    keep_openssl_unloaded,
    limit_heap_retention,
    release_clean_file_pages,
)
from edgecvm.device.profiles import DeviceProfile, load_profile
from edgecvm.device.runtime import FeatureExtractor
from edgecvm.device.state import StateIdentity, load_state
from edgecvm.device.streams import Stream, open_stream
from edgecvm.errors import BadInputError
from edgecvm.formats.bundle import Bundle, load_bundle, load_head_and_anchors
from edgecvm.learning.learner import Learner, LearnerConfig


@dataclass
class Device:
    bundle: Bundle
    profile: DeviceProfile
    learner: Learner
    identity: StateIdentity
    plan: MemoryPlan
    extractor: FeatureExtractor


def open_device(
    bundle_dir: str, profile_name: str, state_dir: str | None, *, learning: bool, method: str | None = None
) -> Device:
    """Everything ``learn``/``predict`` need, verified; ``state_dir=None``: the bundle's initial head."""
    # First, before any large buffer is freed: glibc raises its mmap threshold to the size of each large
    # block freed (reading the bundle frees 1-9 MB blocks), after which ORT's activations would come from
    # the heap and stay resident. Measured (host profile, 120 frames): learning plateaus at 164 MB when this runs after loading, 109 MB here.
    heap_trimmed = limit_heap_retention()
    keep_openssl_unloaded()
    profile = load_profile(profile_name)
    bundle = load_bundle(bundle_dir)
    head, anchors = load_head_and_anchors(bundle)
    identity = StateIdentity.of_bundle(bundle)
    config = LearnerConfig.from_profile(profile, method=method)
    if state_dir is None:
        learner = Learner(head, anchors, config)
    else:
        learner = load_state(state_dir, head, anchors, identity, config, fresh_if_empty=learning)
    plan = plan_for_learner(profile, bundle.backbone_bytes, bundle.manifest.input_size, learner, learning=learning,
                            heap_trimmed=heap_trimmed)
    plan.check(profile)
    release_clean_file_pages()  # import-time code: lowers the base that the session's transient peak stands on
    extractor = FeatureExtractor(bundle, profile, spin_between_runs=not learning)  # learning: the update thread needs them
    extractor.warm_up()
    release_clean_file_pages()  # the graph parser and optimiser and first-run paths, never run again
    learner.extractor = extractor
    return Device(bundle, profile, learner, identity, plan, extractor)


def check_labels(stream: Stream, device: Device) -> None:
    """Every label a file source will give must name an anchor: fail before the first frame, not at frame 3,000."""
    unknown = []
    for label in stream.labels:
        try:
            device.learner.anchors.index_of(label)
        except BadInputError as exc:
            unknown.append((label, exc))
    if unknown:
        names = ", ".join(repr(label) for label, _ in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise BadInputError(f"{stream.spec}: {len(unknown)} label(s) are not concepts of {device.bundle.anchors_path.name}: "
                            f"{names}. First: {unknown[0][1]}")


# ---- command-line plumbing ----------------------------------------------------------------------


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


STREAM_HELP = ("camera0 (or cameraN), picamera2, a video file, an image, an image folder (label = sub-folder), "
               "a .zip of images or a folder inside one (data.zip/tiny-imagenet-200/val; wnid folders are named "
               "from the zip's words.txt), or a manifest (.csv 'path,label' or .jsonl)")


def add_stream_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stream", required=True, metavar="SRC", help=STREAM_HELP)
    parser.add_argument("--every", type=positive_int, default=1, metavar="N", help="keep every N-th frame (default 1)")
    parser.add_argument("--limit", type=positive_int, metavar="N", help="stop after N frames")
    parser.add_argument("--shuffle", type=int, metavar="SEED",
                        help="random order for folders, zips and manifests (default: sorted, one class after another)")
    parser.add_argument("--reconnect-timeout", type=float, default=10.0, metavar="S",
                        help="give a lost camera this many seconds to come back before exiting with code 4 (default 10)")


def stream_from_args(args: argparse.Namespace, labels_from: str | None = None) -> Stream:
    if not (math.isfinite(args.reconnect_timeout) and args.reconnect_timeout >= 0):
        raise BadInputError(f"--reconnect-timeout must be a number of seconds >= 0, got {args.reconnect_timeout}")
    return open_stream(args.stream, every=args.every, limit=args.limit, labels_from=labels_from,  # type: ignore[arg-type]
                       shuffle=args.shuffle, reconnect=Backoff(give_up_after_s=args.reconnect_timeout))


def json_line(record: dict[str, Any]) -> str:
    """One JSON line; NaN/Inf (a skipped loss) become null so every line stays valid JSON."""
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
    return json.dumps(clean, ensure_ascii=False)


class StopOnSignal:
    """Turns the first SIGINT/SIGTERM into a flag (and interrupts a blocking stream); a second one acts as usual."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: object) -> None:
        self.signum = signum
        self.stream.interrupt()
        signal.signal(signum, self._previous[signum])

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():  # Python only lets the main thread set handlers
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

