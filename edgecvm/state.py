"""The learner's state dir: everything learned, in one checksummed file, written atomically.

``state.npz`` holds the head weights, optimizer state, replay buffer, known
concepts, counters, RNG state and the hashes of the bundle and anchors it was
learned with; ``state.npz.prev`` is the checkpoint before it. One file per
checkpoint makes a checkpoint atomic as a whole (no head from one moment with
a replay buffer from another). A corrupt latest file falls back to the
previous one with a warning; a failed write (disk full, read-only card)
warns loudly and leaves the learner running in memory with the last good
file on disk untouched.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from edgecvm.errors import BadInputError, IntegrityError
from edgecvm.integrity import load_container, save_container
from edgecvm.learner import Counters, Learner

STATE_FORMAT = "edgecvm.state"
STATE_VERSION = 1
STATE_FILE = "state.npz"
log = logging.getLogger("edgecvm.state")


def _split(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


class StateStore:
    """Saves and restores a ``Learner`` in ``folder``, bound to one bundle and anchor file."""

    def __init__(self, folder: str | Path, bundle_sha256: str, anchors_sha256: str) -> None:
        self.folder = Path(folder)
        self.bundle_sha256 = bundle_sha256
        self.anchors_sha256 = anchors_sha256
        self.failed_writes = 0
        self.last_saved_update: int | None = None

    @property
    def path(self) -> Path:
        return self.folder / STATE_FILE

    def save(self, learner: Learner) -> bool:
        """Checkpoint now; False (and a warning) when the disk refused the write."""
        arrays = {f"head.{k}": v for k, v in learner.head.params.items()}
        arrays.update({f"opt.{k}": v for k, v in learner.optimizer.state_arrays().items()})
        arrays.update({f"replay.{k}": v for k, v in learner.replay.state_arrays().items()})
        arrays["known"] = np.array(learner.known, dtype=np.int64)
        meta = {"bundle_sha256": self.bundle_sha256, "anchors_sha256": self.anchors_sha256,
                "counters": asdict(learner.counters), "rng": learner.rng.bit_generator.state,
                "saved_at": time.time()}
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            save_container(self.path, STATE_FORMAT, STATE_VERSION, arrays, meta, keep_previous=True)
        except OSError as exc:
            self.failed_writes += 1
            log.warning("CHECKPOINT FAILED: cannot write %s (%s); still learning in memory, the last good "
                        "state on disk is unchanged (%d failed writes)", self.path, exc.strerror or exc,
                        self.failed_writes)
            return False
        self.last_saved_update = learner.counters.updates
        return True

    def _read(self, path: Path) -> tuple[dict[str, np.ndarray], dict]:
        arrays, meta = load_container(path, STATE_FORMAT, (STATE_VERSION,),
                                      "delete the state dir to start learning from scratch")
        for key, want, what in (("bundle_sha256", self.bundle_sha256, "bundle"),
                                ("anchors_sha256", self.anchors_sha256, "anchor file")):
            if meta.get(key) != want:
                raise BadInputError(f"{path}: learned with a different {what}; use the bundle it was made with or "
                                    "another --state dir")
        return arrays, meta

    def load_into(self, learner: Learner) -> bool:
        """Restore the newest readable checkpoint; False when the dir holds none."""
        prev = self.path.with_name(STATE_FILE + ".prev")
        if not self.path.exists() and not prev.exists():
            return False
        try:
            arrays, meta = self._read(self.path)
        except IntegrityError as latest_error:
            if not prev.exists():
                raise
            try:
                arrays, meta = self._read(prev)
            except IntegrityError:
                raise IntegrityError(f"{self.path} and {prev} are both unreadable ({latest_error}); "
                                     "delete the state dir to start from scratch") from None
            log.warning("%s is corrupt (%s); resumed from the previous checkpoint %s", self.path, latest_error, prev)
        except BadInputError:
            raise
        try:
            self._restore(learner, arrays, meta)
        except (KeyError, ValueError, TypeError) as exc:
            raise IntegrityError(f"{self.path}: state is missing a field ({exc}); delete the state dir") from None
        self.last_saved_update = learner.counters.updates
        return True

    def _restore(self, learner: Learner, arrays: dict[str, np.ndarray], meta: dict) -> None:
        head = _split(arrays, "head.")
        if {k: v.shape for k, v in head.items()} != {k: v.shape for k, v in learner.head.params.items()}:
            raise IntegrityError(f"{self.path}: head shapes do not match the bundle's head")
        known = [int(i) for i in arrays["known"]]
        if any(i < 0 or i >= len(learner.anchors) for i in known):
            raise IntegrityError(f"{self.path}: known concepts point outside the anchor file")
        for name, value in head.items():
            learner.head.params[name][...] = value
        learner.optimizer.load_state_arrays(_split(arrays, "opt."))
        learner.replay.load_state_arrays(_split(arrays, "replay."))
        learner.known = known
        counters = dict(meta["counters"])
        learner.counters = Counters(**counters)
        learner.rng.bit_generator.state = meta["rng"]

