"""`edgecvm predict`: name what each frame of a stream shows; accuracy when the source is labelled.

With ``--state`` the learned head answers among the taught concepts
(``--vocab known``, the default; ``unknown`` for a frame that is none of them
unless ``--unknown off``) or the whole anchor file (``--vocab all``).
Without it the bundle's initial head answers zero-shot over every anchor: a
ConSE-initialised bundle names concepts before any teaching. The state is
only read, never written.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from edgecvm.cli.common import (
    StopOnSignal,
    add_device_arguments,
    add_realtime_argument,
    add_stream_arguments,
    add_unknown_arguments,
    json_line,
    positive_int,
    stream_from_args,
)
from edgecvm.cli.progress import Progress

if TYPE_CHECKING:
    from edgecvm.learning.learner import Prediction

log = logging.getLogger("edgecvm.predict")


@dataclass
class Accuracy:
    """Top-1 and top-k accuracy over labelled frames, overall and per concept."""

    correct: int = 0
    correct_top_k: int = 0
    total: int = 0
    per_concept: dict[str, list[int]] = field(default_factory=dict)  # label -> [correct, total]

    def update(self, label: str, prediction: Prediction, same: Callable[[str, str], bool]) -> bool:
        hit = not prediction.unknown and same(prediction.concept, label)
        self.total += 1
        self.correct += hit
        self.correct_top_k += any(same(name, label) for name, _ in prediction.top_k)
        counts = self.per_concept.setdefault(label, [0, 0])
        counts[0] += hit
        counts[1] += 1
        return hit

    @property
    def top1(self) -> float | None:
        return self.correct / self.total if self.total else None

    @property
    def top_k(self) -> float | None:
        return self.correct_top_k / self.total if self.total else None


def cmd_predict(args: argparse.Namespace) -> int:
    from edgecvm.device.device import open_device
    from edgecvm.device.latency import AnswerLatency
    from edgecvm.device.memory_plan import MB, peak_rss_bytes
    from edgecvm.errors import BadInputError

    device = open_device(args.bundle, args.profile, args.state, read_only=True, tune_process=True,
                         unknown=args.unknown == "on", unknown_tpr=args.unknown_tpr, frame_size=args.camera_size)
    learner = device.learner
    vocab = args.vocab or ("known" if args.state else "all")
    if vocab == "known" and not learner.known:
        raise BadInputError(f"{args.state or 'the bundle head'}: no concepts taught yet, so --vocab known has nothing "
                            "to choose from; teach with `edgecvm learn` or use --vocab all (zero-shot)")
    anchors = learner.anchors

    def same(a: str, b: str) -> bool:
        return anchors.index_of(a) == anchors.index_of(b)

    accuracy = Accuracy()
    latency = AnswerLatency()
    frames = bad = unknown_answers = 0
    started, cpu_started = time.monotonic(), time.process_time()
    with stream_from_args(args, device, realtime=args.realtime) as stream, StopOnSignal(stream) as stop, \
            contextlib.closing(device.predict_stream(stream, args.top_k, vocab)) as answers:
        unknown = device.unknown_labels(stream)
        no_accuracy = _why_no_accuracy(stream.spec, [name for name, _ in unknown], device.bundle.anchors_path.name)
        if no_accuracy:
            log.warning("%s", no_accuracy)
        score = not no_accuracy
        with Progress(stream.total, "predict", unit="frames", enabled=None if args.json else False) as bar:
            for answer in answers:  # the next frame is decoded while the backbone runs on this one
                frame, prediction = answer.frame, answer.prediction
                if stop.stopped:
                    break
                frames += 1
                bar.update(1)
                if prediction is None:
                    bad += 1
                    log.warning("skipping %s: %s", frame.origin, frame.error)
                    continue
                if answer.latency_s is not None:
                    latency.add(answer.latency_s)
                unknown_answers += prediction.unknown
                label = frame.label if score else None
                hit = accuracy.update(label, prediction, same) if label is not None else None
                _print_frame(frame.origin, label, prediction, hit, answer.latency_s, args.json)
    elapsed = time.monotonic() - started
    summary = {
        "event": "summary", "frames": frames, "bad_frames": bad, "predicted": frames - bad, "vocab": vocab,
        "vocab_size": len(learner.known) if vocab == "known" else len(anchors), "labelled": accuracy.total,
        "correct": accuracy.correct, "accuracy": accuracy.top1, "unknown": unknown_answers,
        "unknown_threshold": learner.open_set_threshold(), f"top{args.top_k}_accuracy": accuracy.top_k,
        "per_concept": {k: {"correct": c, "total": t} for k, (c, t) in sorted(accuracy.per_concept.items())},
        "elapsed_s": round(elapsed, 3), "frames_per_s": round(frames / elapsed, 2) if elapsed > 0 else None,
        "cpu_s": round(time.process_time() - cpu_started, 3),  # all threads of the process, user + system
        "state": args.state, "peak_rss_mb": round(peak_rss_bytes() / MB, 1), "interrupted_by": stop.name or None,
        "accuracy_note": no_accuracy or None,
        "latency": latency.summary() if latency.frames else None,  # a live source's frames: arrival to answer
    }
    if args.json:
        print(json_line(summary), flush=True)
    else:
        print(f"{frames} frames ({bad} bad, skipped) in {elapsed:.1f} s, vocabulary {vocab} "
              f"({summary['vocab_size']} concepts){f', {unknown_answers} unknown' if unknown_answers else ''}")
        if latency.frames:
            print(f"answered {summary['latency']['p50_ms']} ms after a frame arrived (p50), "
                  f"{summary['latency']['p95_ms']} ms (p95)")
        if no_accuracy:
            print(f"no accuracy: {no_accuracy}")
        elif accuracy.total:
            print(f"accuracy: {100 * accuracy.top1:.1f} % ({accuracy.correct}/{accuracy.total} labelled frames), "
                  f"top-{args.top_k}: {100 * accuracy.top_k:.1f} %")
    return 130 if stop.signum is not None else 0  # Ctrl-C ends a camera run: summary first, then 130


def _why_no_accuracy(spec: str, unknown: list[str], anchors_name: str) -> str:
    """Why accuracy is left out, or "" when the source's labels can be scored."""
    if not unknown:
        return ""
    names = ", ".join(repr(name) for name in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
    return (f"{spec}: {len(unknown)} folder or manifest label(s) are not concepts of {anchors_name} ({names}); "
            "every image is predicted, but accuracy is left out")


def _print_frame(origin: str, label: str | None, prediction: Prediction, hit: bool | None, latency_s: float | None,
                 as_json: bool) -> None:
    if as_json:
        margin = None if prediction.known_margin is None else round(prediction.known_margin, 4)
        print(json_line({"event": "frame", "origin": origin, "concept": prediction.concept,
                         "score": round(prediction.score, 4), "top_k": [[n, round(s, 4)] for n, s in prediction.top_k],
                         "unknown": prediction.unknown, "known_margin": margin, "label": label, "correct": hit,
                         "latency_ms": None if latency_s is None else round(latency_s * 1000, 2)}))
        return
    mark = "" if label is None else f"  [{'ok' if hit else 'WRONG'}: {label}]"
    nearest = f", nearest taught: {prediction.top_k[0][0]}" if prediction.unknown else ""
    print(f"{origin}: {prediction.concept} ({prediction.score:.2f}{nearest}){mark}")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "predict", help="name the concept in each frame of a stream",
        description="Predict the nearest concept anchor for every frame of --stream. With --state: the learned "
        "head (default vocabulary: the taught concepts); without: the bundle's initial head, zero-shot over the "
        "whole anchor file. Labelled sources (folders, zips, manifests) also report accuracy.")
    add_device_arguments(parser)
    add_stream_arguments(parser)
    add_unknown_arguments(parser)
    add_realtime_argument(parser)
    parser.add_argument("--state", metavar="DIR", help="state dir written by `edgecvm learn` (read only)")
    parser.add_argument("--top-k", type=positive_int, default=5, metavar="K", help="alternatives per frame (default 5)")
    parser.add_argument("--vocab", choices=("known", "all"),
                        help="answer among the taught concepts (known; default with --state) or every anchor "
                        "(all; default without --state)")
    parser.add_argument("--json", action="store_true",
                        help="one JSON line per frame and a summary line on stdout; on a camera or a video played "
                        "in real time, each says how long after the frame arrived it was answered (latency_ms) and "
                        "the summary gives the p50/p95")
    parser.set_defaults(func=cmd_predict)
