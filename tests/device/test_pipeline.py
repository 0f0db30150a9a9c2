"""The frame pipeline: the next frame is prepared while the current one is used, one ahead; a live camera answers on
its newest frame; files lose nothing; errors and closing reach the right thread. Events only, no timing."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from edgecvm.device.camera import LiveCamera
from edgecvm.device.pipeline import FramePipeline
from edgecvm.device.preprocess import Preprocessor
from edgecvm.device.streams import CameraStream, Frame, SourceKind, Stream
from edgecvm.errors import StreamLostError

PRE = Preprocessor(8, 8, "bilinear", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
WAIT_S = 30  # a generous bound on waiting for another thread; never reached when the code is right


def image(value: int) -> Image.Image:
    return Image.new("RGB", (8, 8), (value, value, value))


class ScriptedStream(Stream):
    """Frames 0..n-1; records which ones were handed out; ``gates[i]`` (if set) must open before frame i is read."""

    def __init__(self, n: int, fail_after: int | None = None) -> None:
        super().__init__(SourceKind.FOLDER, "scripted", n)
        self.n, self.fail_after = n, fail_after
        self.age_s: float | None = None  # a live source's frames arrived this long before they are read
        self.read: list[int] = []
        self.yielded = [threading.Event() for _ in range(n)]
        self.gates: dict[int, threading.Event] = {}
        self.finished = threading.Event()
        self.interrupted = threading.Event()

    def __iter__(self) -> Iterator[Frame]:
        for i in range(self.n):
            gate = self.gates.get(i)
            if gate is not None:
                while not gate.wait(0.05):
                    if self.interrupted.is_set():
                        return
            if self.fail_after is not None and i == self.fail_after:
                raise StreamLostError("scripted: camera lost")
            self.read.append(i)
            self._reading()
            self.yielded[i].set()
            arrived = None if self.age_s is None else time.monotonic() - self.age_s
            yield Frame(image(i), None, f"scripted#{i}", arrived=arrived) if i != 2 else \
                Frame(None, None, "scripted#2", "corrupt", arrived)
        self.finished.set()

    def _reading(self) -> None:
        """Called as a frame is read, before ``yielded`` says so."""

    def interrupt(self) -> None:
        self.interrupted.set()


def test_a_file_source_gives_every_frame_in_order() -> None:
    stream = ScriptedStream(6)
    consumed = []
    with FramePipeline(stream, PRE) as pipeline:
        for item in pipeline:
            i = int(item.frame.origin.split("#")[1])
            assert len(stream.read) - len(consumed) <= 2  # the one in use and at most one more
            consumed.append(i)
            if item.frame.error is None:
                assert item.batch is not None and item.batch.shape == (1, 3, 8, 8)
                np.testing.assert_array_equal(item.batch[0], PRE(image(i)))
            else:
                assert item.batch is None  # a bad frame is passed on, for the caller to count and skip
    assert consumed == list(range(6))


def test_frames_are_prepared_into_two_batches_in_turn_never_into_the_one_in_use() -> None:
    stream = ScriptedStream(7)
    stream.gates[5] = gate = threading.Event()  # the worker waits here, after preparing frame 4
    with FramePipeline(stream, PRE) as pipeline:
        items = iter(pipeline)
        taken = [next(items) for _ in range(5)]  # frame 2 is corrupt: no batch, no buffer used
        first, second, bad, third, fourth = taken
        assert bad.batch is None
        assert third.batch is first.batch and fourth.batch is second.batch and first.batch is not second.batch
        np.testing.assert_array_equal(third.batch[0], PRE(image(3)))  # frame 4 was prepared while 3 was in use
        np.testing.assert_array_equal(fourth.batch[0], PRE(image(4)))
        gate.set()
        assert [int(item.frame.origin.split("#")[1]) for item in items] == [5, 6]


def test_the_worker_reads_the_next_frame_while_the_consumer_holds_this_one() -> None:
    stream = ScriptedStream(4)
    with FramePipeline(stream, PRE) as pipeline:
        items = iter(pipeline)
        next(items)  # frame 0 is in use (the backbone runs on it) and the next one is not asked for yet
        assert stream.yielded[1].wait(WAIT_S)
        assert not stream.yielded[2].is_set()  # read only once frame 1 is taken: never a queue
        assert next(items).frame.origin == "scripted#1" and stream.yielded[2].wait(WAIT_S)
        assert [int(i.frame.origin.split("#")[1]) for i in items] == [2, 3]


class CountingCapture:
    """A camera whose frames number themselves (pixel values); ``delivered`` is set once ``until`` frames came."""

    def __init__(self, until: int) -> None:
        self.count, self.until = 0, until
        self.delivered = threading.Event()
        self._pace = threading.Event()  # never set: wait() only paces the reader thread

    def read(self) -> tuple[bool, np.ndarray]:
        self._pace.wait(0.001)
        self.count += 1
        if self.count >= self.until:
            self.delivered.set()
        return True, np.full((6, 8, 3), self.count % 256, np.uint8)

    def release(self) -> None:
        pass


def test_a_live_camera_is_answered_on_its_newest_frame_not_a_backlog() -> None:
    capture = CountingCapture(until=60)
    with CameraStream(LiveCamera("fakecam", lambda: capture), SourceKind.CAMERA, every=1, limit=None) as stream, \
            FramePipeline(stream, PRE) as pipeline:
        items = iter(pipeline)
        first = next(items)
        # The consumer is busy (a slow backbone) while the camera delivers dozens of frames.
        assert capture.delivered.wait(WAIT_S)
        waiting, newest = next(items), next(items)

    def seq(item) -> int:
        return int(item.frame.origin.split("#")[1])

    # At most one frame was prepared during the stall; the one after it is the camera's newest, not the stall's
    # backlog (a queue would have given seq(first) + 2).
    assert seq(waiting) > seq(first) and seq(newest) >= 60
    assert newest.frame.arrived is not None and newest.frame.arrived >= waiting.frame.arrived


class LiveScripted(ScriptedStream):
    """Live frames that arrived ``age_s`` before they are read; ``newer`` says whether the source has a newer one
    ready (until it yields again); ``returned`` counts the frames handed back unused."""

    def __init__(self, n: int, age_s: float) -> None:
        super().__init__(n)
        self.kind, self.age_s, self.newer, self.returned = SourceKind.CAMERA, age_s, False, 0

    def _reading(self) -> None:
        self.newer = False  # what it reads is its newest

    def newer_frame_ready(self) -> bool:
        return self.newer

    def return_last(self) -> None:
        self.returned += 1


@pytest.mark.parametrize(("age_s", "max_age_s", "replaced"), [
    (10.0, 1.0, True),    # a slow consumer: the waiting frame is ten seconds old and the camera has a newer one
    (10.0, None, False),  # no limit asked for: every frame read is used
    (0.0, 1.0, False),    # the waiting frame is recent: it is used, newer frame or not
])
def test_a_waiting_frame_too_old_for_the_consumer_is_replaced_by_the_newest(age_s: float, max_age_s: float | None,
                                                                          replaced: bool) -> None:
    stream = LiveScripted(4, age_s)
    with FramePipeline(stream, PRE, max_age_s) as pipeline:
        items = iter(pipeline)
        assert next(items).frame.origin == "scripted#0"
        assert stream.yielded[1].wait(WAIT_S)  # frame 1 waits while the consumer works on frame 0
        stream.newer = True
        stream.gates[2] = threading.Event()
        stream.gates[2].set()
        taken = next(items)
        assert taken.frame.origin == ("scripted#2" if replaced else "scripted#1")
        assert (pipeline.replaced, stream.returned) == ((1, 1) if replaced else (0, 0))
        assert [i.frame.origin for i in items] == [f"scripted#{i}" for i in range(int(taken.frame.origin[-1]) + 1, 4)]


def test_a_slow_consumer_of_a_camera_gets_its_newest_frame_and_its_limit() -> None:
    capture = CountingCapture(until=60)
    with CameraStream(LiveCamera("fakecam", lambda: capture), SourceKind.CAMERA, every=1, limit=2) as stream, \
            FramePipeline(stream, PRE, max_age_s=0.0) as pipeline:
        items = iter(pipeline)
        first = next(items)
        assert capture.delivered.wait(WAIT_S)  # the consumer works while the camera delivers dozens of frames
        second = next(items)
        rest = list(items)
    # The frame prepared as the consumer took the first one is dropped for the camera's newest, and not counted.
    assert int(second.frame.origin.split("#")[1]) >= 60 > int(first.frame.origin.split("#")[1])
    assert pipeline.replaced >= 1 and rest == []


def test_a_lost_camera_is_raised_to_the_consumer_after_the_frames_before_it() -> None:
    stream = ScriptedStream(5, fail_after=3)
    seen = []
    with pytest.raises(StreamLostError, match="camera lost"), FramePipeline(stream, PRE) as pipeline:
        for item in pipeline:
            seen.append(item.frame.origin)
    assert seen == ["scripted#0", "scripted#1", "scripted#2"]


def test_closing_stops_a_worker_that_waits_for_a_frame() -> None:
    stream = ScriptedStream(3)
    stream.gates[1] = threading.Event()  # the source never delivers frame 1
    pipeline = FramePipeline(stream, PRE)
    assert next(iter(pipeline)).frame.origin == "scripted#0"
    pipeline.close()  # interrupts the stream, so the waiting read returns
    assert stream.interrupted.is_set() and not pipeline._thread.is_alive()


def test_camera_frames_carry_their_arrival_time() -> None:
    capture = CountingCapture(until=1)
    with CameraStream(LiveCamera("fakecam", lambda: capture), SourceKind.CAMERA, every=1, limit=3) as stream, \
            FramePipeline(stream, PRE) as pipeline:
        arrivals = [item.frame.arrived for item in pipeline]
    assert len(arrivals) == 3 and all(a is not None and a > 0 for a in arrivals)
    assert arrivals == sorted(arrivals)
