"""What the device commands share: argument types, the stream and device options, JSON lines, signals."""

from __future__ import annotations

import argparse
import json
import math
import signal
import threading
from typing import TYPE_CHECKING, Any

from edgecvm.device.frame_size import CAPTURE_SIZE, MAX_SIDE
from edgecvm.errors import BadInputError

if TYPE_CHECKING:  # the device layer (numpy, PIL) is imported when a command runs, not for --help
    from edgecvm.device.device import Device
    from edgecvm.device.streams import Stream

DEFAULT_PROFILE = "host"
HEAD_METHOD_CHOICES = ("lda", "sgd")  # learning.head_methods.HEAD_METHODS, named here so --help imports no numpy


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def frame_size(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` (e.g. 1280x720) as (width, height)."""
    width, _, height = text.lower().partition("x")
    if not (width.isdigit() and height.isdigit() and 64 <= int(width) <= MAX_SIDE and 64 <= int(height) <= MAX_SIDE):
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT with each side 64-{MAX_SIDE} px, e.g. 1280x720, "
                                         f"got {text!r}")
    return int(width), int(height)


STREAM_HELP = ("camera0 (or cameraN), picamera2, a video file, an image, an image folder (label = sub-folder), "
               "a .zip of images or a folder inside one (data.zip/tiny-imagenet-200/val; wnid folders are named "
               "from the zip's words.txt), or a manifest (.csv 'path,label' or .jsonl)")


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", required=True, help="bundle folder from `edgecvm export`")
    parser.add_argument("--profile", default=DEFAULT_PROFILE,
                        help=f"device profile: a shipped name (`edgecvm profiles list`) or a YAML path "
                             f"(default {DEFAULT_PROFILE})")


def add_realtime_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--realtime", action="store_true",
                        help="play a video file at its own frame rate, as a camera would deliver it")


def add_unknown_arguments(parser: argparse.ArgumentParser) -> None:
    """``--unknown`` and ``--unknown-tpr``: the open-set answers of learning/open_set.py."""
    parser.add_argument("--unknown", choices=("on", "off"), default="on",
                        help="on: a frame judged none of the taught concepts is answered 'unknown' (answering over "
                             "every concept: named by the zero-shot branch among the untaught ones); off: always a "
                             "taught concept (default on)")
    parser.add_argument("--unknown-tpr", type=float, metavar="P",
                        help="share of frames of taught concepts answered as taught, the threshold calibrated on the "
                             "replayed examples (default: the profile's unknown_tpr, 0.95)")


def add_stream_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stream", required=True, metavar="SRC", help=STREAM_HELP)
    parser.add_argument("--every", type=positive_int, default=1, metavar="N", help="keep every N-th frame (default 1)")
    parser.add_argument("--limit", type=positive_int, metavar="N", help="stop after N frames")
    parser.add_argument("--shuffle", type=int, metavar="SEED",
                        help="random order for folders, zips and manifests (default: sorted, one class after another)")
    parser.add_argument("--labels-from", choices=("dirs", "manifest"),
                        help="insist on labels from sub-folders (dirs) or the manifest; default: whatever the source has")
    parser.add_argument("--reconnect-timeout", type=float, default=10.0, metavar="S",
                        help="give a lost camera this many seconds to come back before exiting with code 4 (default 10)")
    parser.add_argument("--camera-size", type=frame_size, default=CAPTURE_SIZE, metavar="WxH",
                        help="frame size to ask a camera for (camera0, picamera2; one that cannot deliver it says so "
                             "and sends its nearest), and the size of each frame in flight in the memory plan "
                             f"(default {CAPTURE_SIZE[0]}x{CAPTURE_SIZE[1]}: more detail than the model's input uses)")


def stream_from_args(args: argparse.Namespace, device: Device, *, loop: bool = False,
                     realtime: bool = False) -> Stream:
    """``--stream`` and its options, opened as ``device`` reads frames (``Device.open_stream``)."""
    from edgecvm.device.camera import Backoff

    if not (math.isfinite(args.reconnect_timeout) and args.reconnect_timeout >= 0):
        raise BadInputError(f"--reconnect-timeout must be a number of seconds >= 0, got {args.reconnect_timeout}")
    return device.open_stream(args.stream, every=args.every, limit=args.limit, labels_from=args.labels_from,
                              shuffle=args.shuffle, reconnect=Backoff(give_up_after_s=args.reconnect_timeout),
                              loop=loop, realtime=realtime)


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
    def stopped(self) -> bool:
        return self.signum is not None

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
