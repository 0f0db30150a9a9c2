"""Head updates on a worker thread, so learning runs nearly as fast as predicting.

A head update (one new frame + 32 replayed features) is a sizeable fraction of
a backbone frame. ONNX Runtime and numpy release the GIL, so the update of
frame i can run while the backbone processes frame i+1.

Up to ``depth`` updates may wait in the queue. Why more than one: the "lda"
head solves its discriminant every 16-256 updates (tens of ms, several backbone
frames); with one update in flight the stream stalls for each solve, with a
queue the backbone goes on meanwhile. This only pays when ORT's threads do not
spin-wait between runs (see runtime.py); otherwise the cores are never free.
Figures in docs/benchmarks.md.

Updates stay strictly sequential and in stream order (one worker), so the
result is identical to calling ``Learner.observe_features`` in line.
Checkpoints are taken on the worker, right after an update, so a checkpoint
never sees half an update. While updates are pending the caller must not
touch the learner; ``wait()`` first, or hand the work to the worker
(``call``), or share the ``lock`` the worker holds for each update (a server
teaching uploads from other threads does).
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from edgecvm.device.state import Checkpointer
from edgecvm.learning.learner import Learner, UpdateResult

DEPTH = 8  # queued updates: covers one ~50 ms solve at ~8 ms per backbone frame

Done = list[tuple[str, UpdateResult]]  # (the frame's origin, its update's result), in stream order
T = TypeVar("T")


class UpdateThread:
    """``with UpdateThread(learner, checkpointer) as updates: updates.submit(features, [concept], origin)``."""

    def __init__(self, learner: Learner, checkpointer: Checkpointer | None = None, depth: int = DEPTH,
                 lock: contextlib.AbstractContextManager[object] | None = None) -> None:
        if depth < 1:
            raise ValueError(f"update queue depth must be >= 1, got {depth}")
        self.learner = learner
        self.checkpointer = checkpointer
        self.depth = depth
        self.lock = lock if lock is not None else contextlib.nullcontext()  # held for each update and its checkpoint
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgecvm-update")
        self._queue: deque[tuple[str, Future[UpdateResult]]] = deque()

    def submit(self, features: np.ndarray, concepts: Sequence[str], origin: str = "") -> Done:
        """Queue one update; returns the updates finished since the last call, blocking while ``depth`` are queued.

        Unknown concepts fail here, in the caller's frame. ``features`` must not be
        modified afterwards (the backbone returns a new array per call).
        """
        for concept in concepts:
            self.learner.anchors.index_of(concept)
        done = self._collect(keep=self.depth - 1)
        self._queue.append((origin, self._pool.submit(self._update, features, list(concepts))))
        return done

    def _update(self, features: np.ndarray, concepts: list[str]) -> UpdateResult:
        with self.lock:
            result = self.learner.observe_features(features, concepts)
            if self.checkpointer is not None:
                self.checkpointer.maybe_checkpoint()
        return result

    def call(self, fn: Callable[[], T]) -> Future[T]:
        """Run ``fn`` on the worker (under the lock) once the updates queued before it are done.

        For reading the learner between updates (a prediction) without waiting
        for the queue; it is not counted in ``depth`` and its result or error
        stays in the returned future.
        """
        def locked() -> T:
            with self.lock:
                return fn()

        return self._pool.submit(locked)

    def _collect(self, keep: int) -> Done:
        """Results of the finished updates at the head of the queue, waiting until at most ``keep`` remain.

        An update's exception is re-raised once the updates queued behind it
        are cancelled (or, if already running, finished): the caller may then
        touch the learner (checkpoint what it has) with nothing in flight.
        """
        done = []
        while self._queue and (len(self._queue) > keep or self._queue[0][1].done()):
            origin, future = self._queue.popleft()
            try:
                done.append((origin, future.result()))
            except BaseException:
                self._discard()
                raise
        return done

    def _discard(self) -> None:
        for _, future in self._queue:
            future.cancel()
        for _, future in self._queue:
            if not future.cancelled():
                future.exception()  # waits; a later update's own error is dropped: the first one is being raised
        self._queue.clear()

    def wait(self) -> Done:
        """Block until every queued update (and its checkpoint) is done; re-raises the first exception."""
        return self._collect(keep=0)

    def close(self) -> Done:
        """Finish the queued updates and stop the worker; returns their results."""
        try:
            return self.wait()
        finally:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> UpdateThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
