"""The learning loop: stream -> backbone -> head update -> checkpoint, reporting through callbacks.

One frame, one update. Frames are decoded and preprocessed on
``pipeline.FramePipeline``'s worker while the backbone runs on the frame
before (a live camera's newest frame wins). Frames that cannot be decoded are
skipped with a logged warning and counted. Updates run on ``UpdateThread``'s worker, up to
``update_thread.DEPTH`` queued, while the backbone reads the next frames;
everything that touches the learner between updates (RSS check, replay
shrink, periodic checkpoint and its report) runs there too, right after an
update. The caller checkpoints at the end (``finish``), also after a lost
camera or a stop request, so nothing taught is lost.

A program that shows what the device sees (``edgecvm serve``) runs the same
loop with a label per frame (``label_for``: a concept, or None to only
predict) and ``on_prediction``: answers are computed on the update worker
between updates, one at a time and at most one per ``predict_interval_s`` (a
frame that comes sooner is not predicted). Why the interval: after an update
the "lda" head solves its discriminant again before it can answer (~50 ms on
the host), so answering every frame while teaching would cost more than the
teaching; a page needs a few answers a second.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from edgecvm.device.device import Device
from edgecvm.device.memory_plan import MB, RssMonitor, peak_rss_bytes, replay_shrinker
from edgecvm.device.pipeline import FramePipeline
from edgecvm.device.state import Checkpointer, state_path
from edgecvm.device.streams import Frame, Stream
from edgecvm.device.update_thread import Done, UpdateThread
from edgecvm.errors import BadInputError
from edgecvm.learning.learner import Prediction

log = logging.getLogger(__name__)
_LOSS_SMOOTHING = 0.05  # weight of the newest loss in the reported running mean


@dataclass(frozen=True)
class FrameReport:
    frames: int  # frames read so far, bad ones included
    loss: float  # running mean of the update loss (NaN before the first)
    known: int  # concepts known


@dataclass(frozen=True)
class CheckpointReport:
    updates: int
    frames: int  # frames the learner has seen in all runs
    loss: float
    known: int
    path: str
    sha256: str | None


class LearnLoop:
    """``LearnLoop(device, stream).run()``: teach every frame of ``stream``, then ``finish()`` to checkpoint.

    ``label``: every frame shows this concept; without it each frame's own
    label (sub-folder, manifest) is used. ``label_for(frame)`` instead decides
    per frame: a concept to teach, or None to skip teaching it. ``should_stop``
    is polled after each frame (a signal handler's flag, a UI's stop button).
    ``on_frame`` and ``on_checkpoint`` report progress; ``on_checkpoint`` runs
    on the update worker, once the file is on disk. ``on_prediction(frame,
    prediction)`` runs on the update worker with a frame's ``top_k`` answer.
    ``predict_interval_s``: the least time between two answers.
    ``lock`` is held for every update, prediction and checkpoint, for a
    program that also teaches from other threads (under the same lock).
    """

    def __init__(
        self,
        device: Device,
        stream: Stream,
        label: str | None = None,
        *,
        label_for: Callable[[Frame], str | None] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        on_frame: Callable[[FrameReport], None] | None = None,
        on_checkpoint: Callable[[CheckpointReport], None] | None = None,
        on_prediction: Callable[[Frame, Prediction], None] | None = None,
        top_k: int = 5,
        predict_interval_s: float = 0.0,
        lock: contextlib.AbstractContextManager[object] | None = None,
    ) -> None:
        if device.checkpointer is None:
            raise BadInputError("learning from a stream needs a device opened with a state dir to checkpoint into")
        if label is not None and label_for is not None:
            raise BadInputError("give one label for every frame or a label per frame, not both")
        self.device, self.stream, self.label, self.label_for = device, stream, label, label_for
        self.should_stop, self.on_frame, self.on_checkpoint = should_stop, on_frame, on_checkpoint
        self.on_prediction, self.top_k, self.predict_interval_s = on_prediction, top_k, predict_interval_s
        self.lock = lock if lock is not None else contextlib.nullcontext()
        self.checkpointer: Checkpointer = device.checkpointer
        learner = device.learner
        if label is not None:  # a new name is embedded now (bundle with the text encoder), else an error, before any frame
            device.add_concepts([label])
        elif label_for is None and not stream.labels:
            raise BadInputError(f"{stream.spec} gives unlabelled frames; say which concept they show")
        elif stream.labels:
            unknown = device.unknown_labels(stream)
            if unknown:
                names = ", ".join(repr(name) for name, _ in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
                raise BadInputError(f"{stream.spec}: {len(unknown)} label(s) are not concepts of "
                                    f"{device.bundle.anchors_path.name}: {names}. First: {unknown[0][1]}")
        self.monitor = RssMonitor(device.profile.memory_budget_mb * MB, replay_shrinker(learner.replay),
                                  file_backed_bytes=device.plan.file_backed_bytes)  # what the bench's verdict judges
        self.start_updates = learner.counters.updates
        self.frames = self.bad_frames = 0
        self.loss = math.nan
        self.started, self.cpu_started = time.monotonic(), time.process_time()

    def run(self) -> None:
        """Teach until the stream ends or ``should_stop()``; raises ``StreamLostError`` when a camera is gone."""
        learner = self.device.learner
        predicting: Future[None] | None = None
        predicted_at = -math.inf
        extractor = self.device.extractor
        with UpdateThread(learner, self, lock=self.lock) as updates, \
                FramePipeline(self.stream, extractor.preprocess) as pipeline:
            for prepared in pipeline:
                frame = prepared.frame
                self.frames += 1
                if prepared.batch is None:
                    self.bad_frames += 1
                    with self.lock:
                        learner.count_bad_frame()
                    log.warning("skipping %s: %s", frame.origin, frame.error)
                else:
                    features = extractor.run(prepared.batch)
                    label = self._label(frame)
                    if label is not None:
                        self._note(updates.submit(features, [label], frame.origin))
                    now = time.monotonic()
                    if self.on_prediction is not None and (predicting is None or predicting.done()) \
                            and now - predicted_at >= self.predict_interval_s:
                        predicting = updates.call(lambda f=frame, x=features: self._predict(f, x))
                        predicted_at = now
                if self.on_frame is not None:
                    self.on_frame(FrameReport(self.frames, self.loss, len(learner.known)))
                if self.should_stop():
                    break
            self._note(updates.wait())

    def _label(self, frame: Frame) -> str | None:
        if self.label_for is not None:
            return self.label_for(frame)
        return self.label or frame.label

    def _predict(self, frame: Frame, features: np.ndarray) -> None:
        """On the update worker, between updates."""
        try:
            prediction = self.device.predict_features(features, self.top_k)[0]
            if self.on_prediction is not None:
                self.on_prediction(frame, prediction)
        except Exception:  # an answer is for display: a failure is logged, learning goes on
            log.exception("predicting %s failed", frame.origin)

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
            self._report_checkpoint()

    def finish(self) -> None:
        """Checkpoint unless the newest file already holds exactly this state (no update may be pending)."""
        with self.lock:
            if self.checkpointer.unsaved and self.checkpointer.checkpoint():
                self._report_checkpoint()

    def _report_checkpoint(self) -> None:
        if self.on_checkpoint is not None:
            counters = self.device.learner.counters
            self.on_checkpoint(CheckpointReport(
                updates=counters.updates, frames=counters.frames_seen, loss=self.loss,
                known=len(self.device.learner.known), path=str(state_path(self.checkpointer.state_dir)),
                sha256=self.checkpointer.last_sha256))

    def summary(self, interrupted_by: str | None = None) -> dict[str, object]:
        """What the run did, JSON-ready."""
        learner = self.device.learner
        elapsed = time.monotonic() - self.started
        return {
            "event": "summary", "frames": self.frames, "bad_frames": self.bad_frames,
            "updates": learner.counters.updates - self.start_updates, "updates_total": learner.counters.updates,
            "skipped_nonfinite": learner.counters.skipped_nonfinite, "loss": self.loss, "known": list(learner.known),
            "elapsed_s": round(elapsed, 3), "frames_per_s": round(self.frames / elapsed, 2) if elapsed > 0 else None,
            "cpu_s": round(time.process_time() - self.cpu_started, 3),  # all threads of the process, user + system
            "checkpoints": self.checkpointer.written, "checkpoint_failures": self.checkpointer.failed,
            "saved_update": self.checkpointer.last_saved_update, "state": str(state_path(self.checkpointer.state_dir)),
            "peak_rss_mb": round(peak_rss_bytes() / MB, 1), "interrupted_by": interrupted_by or None,
        }
