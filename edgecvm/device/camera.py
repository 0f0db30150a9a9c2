"""Live cameras: a background reader that keeps only the newest frame and survives a flaky device.

A learner that falls behind a 30 fps camera must look at what the camera sees
*now*, not at a queue of stale frames, so a reader thread grabs frames as fast
as the device delivers them into a single slot and the consumer takes the
newest one. When a read fails (USB cable knocked, CSI ribbon glitch) the reader
releases the device and reopens it with exponential backoff; if no frame
arrives within ``give_up_after_s`` the stream raises ``StreamLostError``
(exit 4) instead of hanging or, worse, yielding substitute frames the learner
would train on.

Devices are injected as a factory returning a ``Capture`` (OpenCV's
``VideoCapture`` has the right shape; picamera2 gets a small adapter), which
is also how tests drive a fake flaky camera.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from edgecvm.errors import BadInputError, StreamLostError

log = logging.getLogger(__name__)
_WAIT_S = 0.2  # how often a waiting consumer re-checks for close/interrupt


class Capture(Protocol):
    """A frame source: OpenCV ``VideoCapture`` or an adapter with the same two methods."""

    def read(self) -> tuple[bool, np.ndarray | None]:
        """(ok, BGR or grey uint8 array)."""
        ...

    def release(self) -> None: ...


@dataclass(frozen=True)
class Backoff:
    """Reopen schedule after a failed read: initial_s, doubling up to max_s, until give_up_after_s."""

    initial_s: float = 0.1
    max_s: float = 2.0
    give_up_after_s: float = 10.0

    def __post_init__(self) -> None:
        if not (0 < self.initial_s <= self.max_s) or self.give_up_after_s < 0:
            raise BadInputError(f"bad reconnect schedule {self}: need 0 < initial_s <= max_s and give_up_after_s >= 0")


class LiveCamera:
    """``with LiveCamera("camera0", opener) as cam: for seq, bgr, arrived in cam.frames(): ...``.

    ``frames(every=N)`` yields the newest frame once at least N new frames were
    captured since the last one it yielded, with the ``time.monotonic()`` at
    which the reader received it (latency is measured from there); it ends when ``interrupt()`` or
    ``close()`` is called and raises ``StreamLostError`` once the reader gave up.
    """

    def __init__(self, name: str, open_device: Callable[[], Capture], backoff: Backoff | None = None) -> None:
        self.name = name
        self.open_device = open_device
        self.backoff = backoff if backoff is not None else Backoff()
        self.reopen_count = 0  # successful reopens after failures
        self.reconnecting = False  # the device failed and is being reopened (a status page shows it)
        self._cond = threading.Condition()
        self._latest: np.ndarray | None = None
        self._latest_at = 0.0
        self._seq = 0
        self._yielded_seq = 0  # the sequence number frames() yielded last
        self._lost: str | None = None
        self._stopped = threading.Event()
        self._capture: Capture | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle ------------------------------------------------------------------------------

    def start(self) -> LiveCamera:
        """Open the device (errors from the opener propagate) and start the reader thread."""
        if self._thread is None:
            self._capture = self.open_device()
            self._thread = threading.Thread(target=self._read_loop, name=f"edgecvm-{self.name}", daemon=True)
            self._thread.start()
        return self

    def interrupt(self) -> None:
        """Make ``frames()`` end at its next wait (signal handlers call this)."""
        self._stopped.set()
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        """Stop the reader and release the device; safe to call twice."""
        self.interrupt()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._release()

    def __enter__(self) -> LiveCamera:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- consumer side --------------------------------------------------------------------------

    def frames(self, every: int = 1) -> Iterator[tuple[int, np.ndarray, float]]:
        """(sequence number, frame, arrival time), newest first-come; see the class docstring."""
        self.start()
        last = 0
        while True:
            with self._cond:
                while self._seq - last < every and self._lost is None and not self._stopped.is_set():
                    self._cond.wait(_WAIT_S)
                if self._stopped.is_set():
                    return
                if self._seq - last < every:
                    raise StreamLostError(self._lost)
                last, frame, arrived = self._seq, self._latest, self._latest_at
                self._yielded_seq = last
            yield last, frame, arrived

    def newer_frame_ready(self, every: int = 1) -> bool:
        """``frames(every)`` would yield its next frame without waiting: ``every`` new ones since its last."""
        with self._cond:
            return self._seq - self._yielded_seq >= every

    # ---- reader thread --------------------------------------------------------------------------

    def _read_loop(self) -> None:
        while not self._stopped.is_set():
            frame = self._read_once()
            if frame is not None:
                with self._cond:
                    self._latest, self._latest_at, self._seq = frame, time.monotonic(), self._seq + 1
                    self._cond.notify_all()
            elif not self._reopen():
                return

    def _read_once(self) -> np.ndarray | None:
        try:
            ok, frame = self._capture.read() if self._capture is not None else (False, None)
        except Exception as exc:  # drivers raise anything (cv2.error, OSError, RuntimeError); all mean "no frame"
            log.warning("%s: read failed (%s)", self.name, exc)
            return None
        if not ok or frame is None or not getattr(frame, "size", 0):
            return None
        return frame

    def _reopen(self) -> bool:
        """Release and reopen with backoff; False (after recording why) once the time is up or we are stopped."""
        self._release()
        self.reconnecting = True
        try:
            return self._reopen_with_backoff()
        finally:
            self.reconnecting = False

    def _reopen_with_backoff(self) -> bool:
        failing_since = time.monotonic()
        delay = self.backoff.initial_s
        attempt = 0
        log.warning("%s: no frame from the device; reopening (giving up after %.1f s)",
                    self.name, self.backoff.give_up_after_s)
        while not self._stopped.wait(delay):
            attempt += 1
            try:
                self._capture = self.open_device()
            except Exception as exc:  # a missing device is expected here: keep trying until the deadline
                waited = time.monotonic() - failing_since
                if waited + delay > self.backoff.give_up_after_s:
                    return self._give_up(attempt, waited, exc)
                delay = min(delay * 2, self.backoff.max_s)
                continue
            frame = self._read_once()
            if frame is not None:
                self.reopen_count += 1
                log.warning("%s: camera is back after %d reopen attempt(s)", self.name, attempt)
                with self._cond:
                    self._latest, self._latest_at, self._seq = frame, time.monotonic(), self._seq + 1
                    self._cond.notify_all()
                return True
            self._release()
            waited = time.monotonic() - failing_since
            if waited + delay > self.backoff.give_up_after_s:
                return self._give_up(attempt, waited, "opened but delivered no frame")
            delay = min(delay * 2, self.backoff.max_s)
        return False

    def _give_up(self, attempts: int, waited: float, reason: object) -> bool:
        with self._cond:
            self._lost = (f"{self.name}: camera lost; no frame for {waited:.1f} s after {attempts} reopen attempt(s) "
                          f"(last: {reason}); check the cable/driver, or give it longer to reconnect")
            self._cond.notify_all()
        return False

    def _release(self) -> None:
        capture, self._capture = self._capture, None
        if capture is not None:
            try:
                capture.release()
            except Exception as exc:  # releasing a dead device can fail; the handle is dropped either way
                log.warning("%s: releasing the device failed (%s)", self.name, exc)
