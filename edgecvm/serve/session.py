"""What ``edgecvm serve`` runs behind its page: one device, one stream, the learn loop on a thread.

The stream goes through ``device.learn_loop.LearnLoop``, the loop of
``edgecvm learn``, with a label chosen per frame: the concept being recorded
(``teach``), else the frame's own label when the source has one (a folder of
concept sub-folders), else none, and then the frame is only predicted. Every
answer, the newest frame (for the preview) and the counts per concept are
kept here for the web handlers, which run on other threads.

One lock guards the learner: the loop's worker holds it for each update,
prediction and checkpoint, and ``upload`` takes it to teach images, so an
upload never meets half an update. Nothing a request sends can reach the
learner except through ``teach`` and ``upload``, which check the concept
first (a new name is embedded when the bundle carries the text encoder;
otherwise ``UnknownConcept`` with the close names).
"""

from __future__ import annotations

import collections
import io
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from PIL import Image

from edgecvm.device.device import Device
from edgecvm.device.image_files import decode_image
from edgecvm.device.latency import AnswerLatency
from edgecvm.device.learn_loop import FrameReport, LearnLoop
from edgecvm.device.memory_plan import MB, current_rss_bytes, peak_rss_bytes
from edgecvm.device.state import state_path
from edgecvm.device.streams import Frame, Stream
from edgecvm.errors import BadInputError, EdgeCVMError, StreamLostError
from edgecvm.learning.learner import Prediction
from edgecvm.serve.completion import MAX_LIMIT, NameCompleter

log = logging.getLogger(__name__)
PREVIEW_PX = 320  # longest side of the preview JPEG: enough for a phone, cheap to encode a few times a second
PREVIEW_QUALITY = 70
ANSWER_INTERVAL_S = 0.2  # 5 answers a second: smooth enough for the page, cheap for the learner (learn_loop.py)
MAX_RECORD_FRAMES = 10_000  # one teach request labels at most this many frames
_FPS_WINDOW = 64  # frames over which frames/s is measured


class UnknownConcept(BadInputError):
    """A concept that is not in the bundle's anchor file; ``close`` lists the names it may have meant."""

    def __init__(self, name: str, close: list[str]) -> None:
        hint = f" Close names: {', '.join(close)}." if close else ""
        super().__init__(f"unknown concept {name!r}: not among the anchors of this bundle, which carries no text "
                         f"encoder to embed new names (edgecvm export --text-encoder).{hint}")
        self.close = close


@dataclass
class Recording:
    concept: str
    remaining: int  # frames still to label


class ServeSession:
    """``session.start()`` runs the loop on a thread; ``close()`` stops it and checkpoints."""

    def __init__(self, device: Device, stream: Stream, *, top_k: int = 5,
                 should_stop: Callable[[], bool] = lambda: False) -> None:
        self.device, self.stream, self.top_k = device, stream, top_k
        self.should_stop = should_stop
        self.lock = threading.Lock()  # the learner (see the module docstring)
        self._guard = threading.Lock()  # the fields below
        self._stop = threading.Event()
        self.paused = False
        self.recording: Recording | None = None
        self.answer: dict[str, object] | None = None
        self.answer_seq = 0  # increases with every answer: what the predictions feed waits on
        self._frame: Image.Image | None = None
        self._frame_seq = 0
        self._preview: tuple[int, bytes] | None = None
        self._preview_lock = threading.Lock()
        self._counts: dict[str, int] = dict(device.learner.counters.per_concept)
        self._times: collections.deque[float] = collections.deque(maxlen=_FPS_WINDOW)
        self._latency = AnswerLatency()  # a live source's answers: arrival to answer
        self.stream_state = "starting"  # running, reconnecting, ended, lost, failed, stopped
        self.stream_error: str | None = None
        self.uploaded = 0
        self.stream_summary: dict[str, object] | None = None  # the loop's summary when the stream ended or stopped
        self.loop = LearnLoop(device, stream, label_for=self._label_for, should_stop=self._stopping,
                              on_frame=self._on_frame, on_prediction=self._on_prediction, top_k=top_k,
                              predict_interval_s=ANSWER_INTERVAL_S, lock=self.lock)
        self._thread = threading.Thread(target=self._run, name="edgecvm-serve-loop", daemon=True)
        self.completer = NameCompleter(device.learner.anchors.names)

    # ---- the loop thread ------------------------------------------------------------------------

    def start(self) -> ServeSession:
        self.stream_state = "running"
        self._thread.start()
        return self

    def _run(self) -> None:
        error = None
        try:
            self.loop.run()
            state = "stopped" if self._stopping() else "ended"
        except StreamLostError as exc:
            state, error = "lost", str(exc)
        except EdgeCVMError as exc:
            state, error = "failed", str(exc)
        except Exception as exc:  # the page and uploads stay up; the log has the traceback
            log.exception("the learn loop failed")
            state, error = "failed", f"{type(exc).__name__}: {exc}"
        with self.lock:  # every update is done: the counts shown so far came with the last (throttled) answer
            counts = dict(self.device.learner.counters.per_concept)
        with self._guard:
            self._counts = counts
        self.stream_state, self.stream_error = state, error  # after the counts: "ended" means all is shown
        try:
            self.loop.finish()  # keep what the stream taught, whatever ended it
        except Exception:
            log.exception("checkpoint after the stream ended failed")
        self.stream_summary = self.loop.summary(self.stream_state)

    def _stopping(self) -> bool:
        return self._stop.is_set() or self.should_stop()

    @property
    def closing(self) -> bool:
        return self._stopping()

    def _label_for(self, frame: Frame) -> str | None:
        with self._guard:
            if self.paused:
                return None
            recording = self.recording
            if recording is None:
                return frame.label
            recording.remaining -= 1
            if recording.remaining <= 0:
                self.recording = None
            return recording.concept

    def _on_frame(self, report: FrameReport) -> None:
        self._times.append(time.monotonic())

    def _on_prediction(self, frame: Frame, prediction: Prediction) -> None:
        """On the update worker, under the learner lock: the counts read here are consistent."""
        counts = dict(self.device.learner.counters.per_concept)
        seconds = frame.age_s()
        answer = {"concept": prediction.concept, "score": round(prediction.score, 4),
                  "top_k": [[name, round(score, 4)] for name, score in prediction.top_k],
                  "frame": frame.origin, "among": "known" if counts else "all", "unknown": prediction.unknown,
                  "latency_ms": None if seconds is None else round(seconds * 1000, 1)}
        with self._guard:
            if seconds is not None:
                self._latency.add(seconds)
            self.answer, self.answer_seq = answer, self.answer_seq + 1
            self._frame, self._frame_seq = frame.image, self._frame_seq + 1
            self._counts = counts

    def close(self) -> None:
        """Stop the loop (the stream is interrupted), wait for it, and checkpoint what was taught."""
        self._stop.set()
        self.stream.interrupt()
        if self._thread.is_alive():
            self._thread.join()
        with self.lock:
            if self.loop.checkpointer.unsaved:
                self.loop.checkpointer.checkpoint()  # uploads after the loop ended

    # ---- what requests do -----------------------------------------------------------------------

    def concept(self, name: object) -> str:
        """The anchor file's spelling of ``name``, after embedding it when it is new and the bundle carries the
        text encoder; ``UnknownConcept`` with close names otherwise."""
        if not isinstance(name, str) or not name.strip():
            raise BadInputError("say which concept: a non-empty name")
        anchors = self.device.learner.anchors
        if name not in anchors and self.device.bundle.has_text_encoder:
            with self.lock:  # the learner's anchors grow: not in the middle of an update
                self.device.add_concepts([name])
            anchors = self.device.learner.anchors
            self.completer = NameCompleter(anchors.names)  # the field completes the new name too
        try:
            return anchors.names[anchors.index_of(name)]
        except BadInputError:
            raise UnknownConcept(name, anchors.close_names(name)) from None

    def teach(self, name: object, frames: object) -> dict[str, object]:
        """Label the next ``frames`` frames of the stream as the concept."""
        concept = self.concept(name)
        if isinstance(frames, bool) or not isinstance(frames, int) or not 1 <= frames <= MAX_RECORD_FRAMES:
            raise BadInputError(f"frames must be a whole number from 1 to {MAX_RECORD_FRAMES}, got {frames!r}")
        if self.stream_state not in ("running", "reconnecting", "starting"):
            raise BadInputError(f"the stream has {self.stream_state}, so there are no frames to record; "
                                "upload images of the concept instead")
        with self._guard:
            self.recording = Recording(concept, frames)
        return {"recording": {"concept": concept, "remaining": frames}, "paused": self.paused}

    def stop_recording(self) -> dict[str, object]:
        with self._guard:
            self.recording = None
        return {"recording": None}

    def set_paused(self, paused: bool) -> dict[str, object]:
        with self._guard:
            self.paused = paused
        return {"paused": paused}

    def upload(self, name: object, files: Sequence[tuple[str, bytes]]) -> dict[str, object]:
        """Teach each image file as the concept; files that cannot be decoded are refused one by one."""
        concept = self.concept(name)
        if not files:
            raise BadInputError("no image in the upload")
        refused = []
        taught = 0
        for filename, data in files:
            image, error = decode_image(data, self.device.extractor.preprocess.decode_size)
            if image is None:
                refused.append({"file": filename, "error": error})
                continue
            features = self.device.extractor.extract([image])  # outside the lock: the stream goes on meanwhile
            with self.lock:
                self.device.teach_features(features, concept)
                self.loop.monitor.tick()  # an upload is a frame too: the replay buffer sheds under memory pressure
                counts = dict(self.device.learner.counters.per_concept)
            taught += 1
            with self._guard:
                self._counts = counts
                self.uploaded += 1
        return {"concept": concept, "taught": taught, "refused": refused}

    # ---- what the page shows --------------------------------------------------------------------

    def concepts(self) -> dict[str, object]:
        with self._guard:
            counts = dict(self._counts)
        return {"known": [{"name": name, "examples": n} for name, n in counts.items()],
                "vocabulary_size": len(self.completer)}

    def vocabulary(self, text: object, limit: object) -> dict[str, object]:
        """At most ``limit`` concept names matching ``text`` (completion.py), for the page's concept field."""
        if not isinstance(text, str):
            raise BadInputError("say what to complete: ?q=TEXT")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise BadInputError(f"limit must be a whole number from 1 to {MAX_LIMIT}, got {limit!r}")
        return {"query": text, "matches": self.completer.complete(text, limit), "vocabulary_size": len(self.completer)}

    def preview_jpeg(self) -> bytes | None:
        """The newest frame, downscaled, as JPEG (encoded once per frame, however many pages ask)."""
        with self._guard:
            image, seq = self._frame, self._frame_seq
        if image is None:
            return None
        with self._preview_lock:
            if self._preview is None or self._preview[0] != seq:
                small = image.copy()
                small.thumbnail((PREVIEW_PX, PREVIEW_PX))
                buffer = io.BytesIO()
                small.save(buffer, "JPEG", quality=PREVIEW_QUALITY)
                self._preview = (seq, buffer.getvalue())
            return self._preview[1]

    def frames_per_s(self) -> float | None:
        times = list(self._times)
        if len(times) < 2 or time.monotonic() - times[-1] > 2.0:
            return None
        return round((len(times) - 1) / (times[-1] - times[0]), 1) if times[-1] > times[0] else None

    def status(self) -> dict[str, object]:
        device, checkpointer = self.device, self.loop.checkpointer
        if self.stream_state == "running" and self.stream.reconnecting:
            state = "reconnecting"
        else:
            state = self.stream_state
        with self._guard:
            recording = None if self.recording is None else {"concept": self.recording.concept,
                                                             "remaining": self.recording.remaining}
            paused, known = self.paused, len(self._counts)
            latency = self._latency.summary() if self._latency.frames else None
        path = state_path(checkpointer.state_dir)
        rss = current_rss_bytes()
        return {
            "stream": {"source": self.stream.spec, "kind": self.stream.kind.value, "state": state,
                       "error": self.stream_error, "frames": self.loop.frames, "bad_frames": self.loop.bad_frames,
                       "frames_per_s": self.frames_per_s(), "answer_latency": latency},
            "learning": {"paused": paused, "recording": recording, "known": known, "uploaded": self.uploaded,
                         "updates": device.learner.counters.updates, "head": device.learner.method.name},
            "memory": {"rss_mb": None if rss is None else round(rss / MB, 1),
                       "peak_rss_mb": round(peak_rss_bytes() / MB, 1),
                       "budget_mb": device.profile.memory_budget_mb},
            "checkpoint": {"update": checkpointer.last_saved_update, "written": checkpointer.written,
                           "failed": checkpointer.failed, "path": str(path),
                           "at": path.stat().st_mtime if path.is_file() else None},
            "profile": device.profile.name,
        }
