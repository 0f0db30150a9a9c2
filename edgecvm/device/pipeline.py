"""Decode and preprocess the next frame on a worker thread while the backbone runs on the current one.

Decoding a camera-sized JPEG and preprocessing it cost about as much as the
backbone itself (docs/benchmarks.md); done in line, they run *between*
backbone runs and the cores idle. PIL's decoder and resize and numpy release
the GIL, so a worker that prepares frame i+1 while ONNX Runtime runs frame i
hides most of that cost.

The worker reads a frame only once the consumer has taken the one before, so
one prepared frame at most waits beside the one in use. For a file source
that loses nothing and keeps the backbone fed as long as preparing a frame
takes less than a backbone run. For a live source (a camera, a video in real
time) it means the answer is on what the source shows *now*: the frame read
is the camera's newest (its reader keeps only that), at most one backbone run
old, and no queue of stale frames builds up. Reading on and replacing a
waiting frame with a newer one would prepare frames nobody uses, taking a
core from the backbone on a 2-core board.

A consumer that works long between frames (robot code between answers)
would still be handed a frame read as it took the one before, as old as
that work. With ``max_age_s``, a waiting frame of a live source older than
that is replaced when the source has a newer one ready: it is dropped
unused (the stream does not count it toward its limit), and the consumer
waits one decode and preprocess for the newest frame instead.

The consumer iterates ``Prepared`` items in source order; an error raised by
the stream (a lost camera) is re-raised in the consumer after the frames
prepared before it. An item's batch is valid until the consumer takes the
next item: the worker writes frames into two batches in turn, so no frame
allocates (and the kernel maps and zeroes) a fresh 0.6 MB input
(docs/benchmarks.md).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from edgecvm.device.preprocess import Preprocessor
from edgecvm.device.streams import Frame, Stream


@dataclass(frozen=True)
class Prepared:
    """A frame with its backbone input, a (1, 3, S, S) float32 batch (None for a frame that could not be read;
    overwritten once the item after the next is prepared: module docstring)."""

    frame: Frame
    batch: np.ndarray | None


_END = object()  # the stream ended; stored in the slot after the last frame


class FramePipeline:
    """``with FramePipeline(stream, preprocess) as frames: for item in frames: backbone(item.batch)``."""

    def __init__(self, stream: Stream, preprocess: Preprocessor, max_age_s: float | None = None) -> None:
        self.stream, self.preprocess, self.max_age_s = stream, preprocess, max_age_s
        self.replaced = 0  # waiting frames dropped for newer ones (module docstring)
        self._cond = threading.Condition()
        self._slot: list[object] = []  # at most one item: a Prepared, _END or the stream's exception
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="edgecvm-prepare", daemon=True)
        self._started = False  # the worker starts with the first iteration
        size = preprocess.input_size
        self._batches = [np.empty((1, 3, size, size), dtype=np.float32) for _ in range(2)]
        self._prepared = 0

    def __iter__(self) -> Iterator[Prepared]:
        if not self._started:
            self._started = True
            self._thread.start()
        while True:
            with self._cond:
                while not self._slot:
                    self._cond.wait()
                item = self._slot.pop(0)
                stale = self._stale(item)
                if stale:  # the worker waits for room, outside the stream's iteration: safe to tell the stream
                    self.stream.return_last()
                    self.replaced += 1
                self._cond.notify_all()
            if stale:
                continue
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]

    def _stale(self, item: object) -> bool:
        if self.max_age_s is None or not isinstance(item, Prepared):
            return False
        age = item.frame.age_s()
        return age is not None and age > self.max_age_s and self.stream.newer_frame_ready()

    def _prepare(self, frame: Frame) -> Prepared:
        if frame.error is not None or frame.image is None:
            return Prepared(frame, None)
        batch = self._batches[self._prepared % 2]  # the consumer holds the other one, at most
        self._prepared += 1
        self.preprocess(frame.image, batch[0])
        return Prepared(frame, batch)

    def _work(self) -> None:
        try:
            frames = iter(self.stream)
            while self._wait_for_room():
                frame = next(frames, None)
                if frame is None:
                    self._put(_END)
                    return
                if not self._put(self._prepare(frame)):
                    return
        except BaseException as exc:  # handed to the consumer, raised in its thread
            self._put(exc)

    def _wait_for_room(self) -> bool:
        """Wait until the slot is free; False once closed."""
        with self._cond:
            while self._slot and not self._closed:
                self._cond.wait()
            return not self._closed

    def _put(self, item: object) -> bool:
        """Store ``item`` for the consumer once the slot is free; False once the pipeline is closed."""
        if not self._wait_for_room():
            return False
        with self._cond:
            self._slot.append(item)
            self._cond.notify_all()
            return True

    def close(self) -> None:
        """Stop the worker (the stream is interrupted, so a waiting camera read returns) and wait for it."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self.stream.interrupt()  # a worker waiting for a camera frame returns
            self._thread.join()

    def __enter__(self) -> FramePipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
