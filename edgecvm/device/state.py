"""The learner's state dir: everything learned, in one checksummed file, written atomically.

``<dir>/state.npz`` (container format ``edgecvm.state`` v1) holds the head
method's arrays (weights, optimizer moments), the replay buffer, the known
concepts, the counters, both random generators' states, the head method's
name and the sha256 of the bundle and anchor file it was learned with.
``state.npz.prev`` is the checkpoint before it. One file per checkpoint makes
a checkpoint atomic as a whole: never a head from one moment with a replay
buffer from another.

Loading verifies the checksum; a corrupt or truncated latest file falls back to
``.prev`` with a warning naming the file; both bad is an ``IntegrityError``
naming both. A state made with another bundle or anchor file is refused: its
weights would map features into a different space. A failed write (disk full,
read-only card) must not stop a device that is learning, so ``Checkpointer``
warns loudly, counts it and keeps going in memory; the atomic write leaves the
last good file on disk untouched.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecvm import __version__
from edgecvm.errors import BadInputError, EdgeCVMError, IntegrityError
from edgecvm.formats.anchors import AnchorSet
from edgecvm.formats.bundle import Bundle
from edgecvm.formats.head_file import HeadParams
from edgecvm.formats.integrity import (
    load_container,
    previous_path,
    read_latest_or_previous,
    remove_stale_temps,
    save_container,
)
from edgecvm.formats.schema import from_dict
from edgecvm.learning.head_methods import HEAD_METHODS
from edgecvm.learning.learner import Counters, FeatureExtractor, Learner, LearnerConfig
from edgecvm.learning.replay import ReplayBuffer

STATE_FORMAT = "edgecvm.state"
STATE_VERSION = 1
STATE_FILE = "state.npz"
_FIX = "delete the state dir, or use another one, to start learning from scratch"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StateIdentity:
    """What a state is only valid with: the bundle (backbone + initial head) and the anchor file."""

    bundle_sha256: str
    anchors_sha256: str

    @classmethod
    def of_bundle(cls, bundle: Bundle) -> StateIdentity:
        return cls(bundle_sha256=bundle.sha256, anchors_sha256=bundle.manifest.anchors_sha256)


def state_path(state_dir: str | Path) -> Path:
    return Path(state_dir) / STATE_FILE


def has_state(state_dir: str | Path) -> bool:
    """True when the dir holds a checkpoint (latest or previous)."""
    path = state_path(state_dir)
    return path.exists() or previous_path(path).exists()


# ---- writing ------------------------------------------------------------------------------------


def save_state(state_dir: str | Path, learner: Learner, identity: StateIdentity) -> str:
    """Write a checkpoint atomically (previous one kept as ``.prev``); returns its sha256.

    Raises ``OSError`` unchanged (disk full, read-only); ``Checkpointer`` turns it into a warning.
    """
    arrays = {f"method.{k}": v for k, v in learner.method.state_arrays().items()}
    arrays.update({f"replay.{k}": v for k, v in learner.replay.state_arrays().items()})
    meta: dict[str, Any] = {
        "method": learner.method.name,
        "known": list(learner.known),
        "counters": dataclasses.asdict(learner.counters),
        "seed": learner.config.seed,
        "rng": learner.rng.bit_generator.state,
        "replay_rng": learner.replay.rng.bit_generator.state,
        "feature_dim": learner.feature_dim,
        "bundle_sha256": identity.bundle_sha256,
        "anchors_sha256": identity.anchors_sha256,
        "edgecvm_version": __version__,
    }
    return save_container(state_path(state_dir), STATE_FORMAT, STATE_VERSION, arrays, meta, keep_previous=True)


class Checkpointer:
    """Checkpoints a learner every ``every`` updates; a failed write warns and learning goes on."""

    def __init__(self, state_dir: str | Path, learner: Learner, identity: StateIdentity, every: int) -> None:
        if every <= 0:
            raise BadInputError(f"the checkpoint interval must be at least 1 update, got {every}")
        self.state_dir = Path(state_dir)
        self.learner = learner
        self.identity = identity
        self.every = every
        stale = remove_stale_temps(state_path(state_dir))
        if stale:
            log.warning("removed %d partial checkpoint file(s) left in %s by an interrupted write (power loss?)",
                        len(stale), self.state_dir)
        self.written = 0  # successful checkpoints by this process
        self.failed = 0  # checkpoints the disk refused
        self.last_saved_update: int | None = None  # learner.counters.updates in the newest file on disk
        self.last_sha256: str | None = None
        self._last_attempt = learner.counters.updates
        self._saved_counters = dataclasses.asdict(learner.counters)  # as resumed (or fresh): nothing new to save yet

    @property
    def unsaved(self) -> bool:
        """True when the learner changed (updates, frames counted) since it was resumed or last checkpointed."""
        return dataclasses.asdict(self.learner.counters) != self._saved_counters

    def maybe_checkpoint(self) -> bool:
        """Checkpoint if ``every`` updates passed since the last attempt; True when a file was written."""
        if self.learner.counters.updates - self._last_attempt < self.every:
            return False
        return self.checkpoint()

    def checkpoint(self) -> bool:
        """Checkpoint now. False (after a loud warning) when the write failed; never raises ``OSError``."""
        updates = self.learner.counters.updates
        self._last_attempt = updates
        try:
            sha = save_state(self.state_dir, self.learner, self.identity)
        except OSError as exc:
            self.failed += 1
            on_disk = "none" if self.last_saved_update is None else f"update {self.last_saved_update}"
            log.warning(
                "CHECKPOINT FAILED: cannot write %s (%s). Learning continues IN MEMORY ONLY; "
                "the state on disk is unchanged (last checkpoint written by this run: %s); "
                "%d failed checkpoint(s) so far. Free space or fix the card to keep what is learned.",
                state_path(self.state_dir), exc.strerror or exc, on_disk, self.failed,
            )
            return False
        self.written += 1
        self.last_saved_update, self.last_sha256 = updates, sha
        self._saved_counters = dataclasses.asdict(self.learner.counters)
        return True


# ---- reading ------------------------------------------------------------------------------------


def load_state(
    state_dir: str | Path,
    head: HeadParams,
    anchors: AnchorSet,
    identity: StateIdentity,
    config: LearnerConfig | None = None,
    extractor: FeatureExtractor | None = None,
    fresh_if_empty: bool = False,
) -> Learner:
    """Resume the learner saved in ``state_dir``.

    ``head`` and ``anchors`` are the bundle's (the state only stores what was
    learned on top). ``config`` supplies the current profile's replay size and
    batch; its ``method``, if set, must match the saved one. Falls back to
    ``state.npz.prev`` with a warning when the latest file is corrupt. An
    empty dir is an error, or with ``fresh_if_empty`` (the first `learn`) a
    new learner.
    """
    path = state_path(state_dir)
    if not has_state(state_dir):
        if fresh_if_empty:
            return Learner(head, anchors, config, extractor)
        raise BadInputError(
            f"{path}: no learner state here; teach something into {state_dir} first"
        )
    learner, read, latest_error = read_latest_or_previous(
        path, lambda file: _restore(file, head, anchors, identity, config, extractor), "state files")
    if latest_error is not None:
        log.warning("%s is unusable (%s); resumed from the previous checkpoint %s (update %d)",
                    path, latest_error, read, learner.counters.updates)
    return learner


def _restore(
    path: Path,
    head: HeadParams,
    anchors: AnchorSet,
    identity: StateIdentity,
    config: LearnerConfig | None,
    extractor: FeatureExtractor | None,
) -> Learner:
    """Build a learner from one state file; ``IntegrityError`` for anything unreadable or inconsistent."""
    if not path.exists():
        raise IntegrityError(f"{path}: missing; {_FIX}")
    arrays, meta = load_container(path, STATE_FORMAT, (STATE_VERSION,), _FIX)
    _check_identity(path, meta, identity)
    config = config if config is not None else LearnerConfig()
    saved_method = meta.get("method")  # the container's schema leaves meta free-form: checked here
    if not isinstance(saved_method, str):
        raise IntegrityError(f"{path}: inconsistent state (its head method is {type(saved_method).__name__}, "
                             f"not a name); {_FIX}")
    if saved_method not in HEAD_METHODS:
        raise BadInputError(
            f"{path}: this state was learned with head method {saved_method!r}, which this edgecvm does not offer "
            f"({', '.join(HEAD_METHODS)}); {_FIX}"
        )
    if config.method is not None and config.method != saved_method:
        raise BadInputError(
            f"{path}: this state was learned with head method {saved_method!r}, not {config.method!r}; "
            f"keep its method ({saved_method!r}) or use another state dir"
        )
    try:
        learner = Learner(head, anchors, dataclasses.replace(config, method=saved_method, seed=int(meta["seed"])),
                          extractor)
        _fill(learner, arrays, meta)
    except EdgeCVMError as exc:
        raise IntegrityError(f"{path}: inconsistent state ({exc}); {_FIX}") from None
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        raise IntegrityError(f"{path}: inconsistent state ({type(exc).__name__}: {exc}); {_FIX}") from None
    return learner


def _check_identity(path: Path, meta: Mapping[str, Any], identity: StateIdentity) -> None:
    for key, what in (("bundle_sha256", "bundle"), ("anchors_sha256", "anchor file")):
        saved, current = meta.get(key), getattr(identity, key)
        if saved != current:
            shown = str(saved)[:12]
            shown = shown if shown.isalnum() else repr(shown)  # the file is untrusted: keep the error one line
            raise BadInputError(
                f"{path}: this state was learned with a different {what} (sha256 {shown}…, "
                f"the current one is {current[:12]}…); use the {what} it was made with, or another state dir"
            )


def _section(arrays: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def saved_known(meta: Mapping[str, Any]) -> list[str]:
    """The known concepts a state file's metadata names, in teaching order (``ValueError`` if they are not names)."""
    known = meta["known"]
    if not (isinstance(known, list) and all(isinstance(n, str) for n in known) and len(set(known)) == len(known)):
        raise ValueError("known concepts are not a list of distinct names")
    return known


def saved_counters(meta: Mapping[str, Any]) -> Counters:
    """The counters a state file's metadata holds (``ValueError`` unless whole numbers >= 0)."""
    counters = from_dict(Counters, meta["counters"], "counters")
    counts = [v for k, v in dataclasses.asdict(counters).items() if k != "per_concept"]
    counts += list(counters.per_concept.values())
    if not all(isinstance(c, int) and c >= 0 for c in counts):  # the schema checks the dict, not its values
        raise ValueError("counters must be whole numbers >= 0")
    return counters


def _fill(learner: Learner, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
    """Load saved arrays and metadata into a freshly built learner (raises on any inconsistency)."""
    learner.method.load_state_arrays(_section(arrays, "method."))
    learner.restore_known(saved_known(meta))
    replay = ReplayBuffer.from_state_arrays(
        _section(arrays, "replay."), learner.replay.capacity, learner.feature_dim, learner.config.seed
    )
    if replay.size and int(replay.labels[: replay.size].max()) >= len(learner.known):
        raise ValueError("replay labels refer to concepts that are not in the known list")
    learner.replay = replay
    learner.counters = saved_counters(meta)
    learner.rng.bit_generator.state = meta["rng"]
    learner.replay.rng.bit_generator.state = meta["replay_rng"]
