"""What a state dir holds, read without its bundle: for `edgecvm state show` and a fleet's operator.

Which concepts a device knows, how many examples it was taught of each and
how many its head is solved from (after a fleet merge, the others' too), how
far it got, and which bundle it belongs to: from the checkpoint file alone,
checksum verified, the previous checkpoint read instead when the latest is
unusable, as a device resuming it would.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgecvm.device.new_concepts import load_new_concepts
from edgecvm.device.state import (
    STATE_FORMAT,
    STATE_VERSION,
    has_state,
    saved_counters,
    saved_known,
    state_path,
)
from edgecvm.errors import BadInputError, EdgeCVMError, IntegrityError
from edgecvm.formats.integrity import load_container, previous_path, read_latest_or_previous

_FIX = "its device cannot resume it either; restore the state dir from a copy, or start a new one"


@dataclass(frozen=True)
class ConceptSummary:
    name: str
    taught_here: int  # frames this device was taught as the concept
    in_statistics: int | None  # samples of it the head is solved from, other devices' merged ones included (lda)


@dataclass(frozen=True)
class StateSummary:
    state_dir: str
    read_from: str  # the checkpoint file described
    latest_unusable: str | None  # why the latest file was not read (the previous one was), else None
    written_at: str  # the file's modification time, ISO 8601 with the local offset
    bytes: int
    previous_checkpoint: bool  # a previous checkpoint is kept beside the latest
    head: str
    feature_dim: int
    concepts: list[ConceptSummary]  # in teaching order
    updates: int
    frames_seen: int
    skipped_nonfinite: int
    bad_frames: int
    replay_samples: int
    merged_samples: int | None  # samples in the statistics, other devices' included, when merged (a fleet)
    own_samples: int | None  # of those, taught on this device
    new_concepts: list[str]  # names embedded on the device (not in the bundle's anchor file)
    bundle_sha256: str
    anchors_sha256: str
    edgecvm_version: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def describe_state(state_dir: str | Path) -> StateSummary:
    """``BadInputError`` when the dir holds no state; ``IntegrityError`` when no checkpoint in it can be read."""
    path = state_path(state_dir)
    if not has_state(state_dir):
        raise BadInputError(f"{path}: no learner state here (`edgecvm learn --state {state_dir}` makes one)")
    summary, read, latest_error = read_latest_or_previous(path, lambda file: _summarise(file, state_dir), "state files")
    return replace(summary, latest_unusable=None if latest_error is None else str(latest_error),
                   previous_checkpoint=read == path and previous_path(path).exists(),
                   new_concepts=_new_concepts(state_dir))


def _summarise(path: Path, state_dir: str | Path) -> StateSummary:
    """One checkpoint file; ``IntegrityError`` for anything a device could not resume from."""
    if not path.exists():
        raise IntegrityError(f"{path}: missing")
    arrays, meta = load_container(path, STATE_FORMAT, (STATE_VERSION,), _FIX)
    try:
        known, counters = saved_known(meta), saved_counters(meta)
        stats = _counts(arrays, "method.stats.counts", len(known))
        own = _counts(arrays, "method.own.counts", len(known))
        replay = arrays.get("replay.features", np.zeros((0, 0)))
        method, feature_dim = meta["method"], meta["feature_dim"]
        bundle_sha256, anchors_sha256 = meta["bundle_sha256"], meta["anchors_sha256"]
        if not (isinstance(method, str) and isinstance(feature_dim, int)
                and isinstance(bundle_sha256, str) and isinstance(anchors_sha256, str)):
            raise ValueError("its head method, feature size or bundle hashes are not what a device writes")
    except (KeyError, ValueError, EdgeCVMError) as exc:
        raise IntegrityError(f"{path}: inconsistent state ({exc}); {_FIX}") from None
    info = path.stat()
    return StateSummary(
        state_dir=str(state_dir), read_from=str(path), latest_unusable=None,
        written_at=datetime.datetime.fromtimestamp(info.st_mtime).astimezone().isoformat(timespec="seconds"),
        bytes=info.st_size, previous_checkpoint=False, head=method, feature_dim=feature_dim,
        concepts=[ConceptSummary(name, counters.per_concept.get(name, 0), None if stats is None else int(stats[i]))
                  for i, name in enumerate(known)],
        updates=counters.updates, frames_seen=counters.frames_seen, skipped_nonfinite=counters.skipped_nonfinite,
        bad_frames=counters.bad_frames, replay_samples=int(replay.shape[0]),
        merged_samples=None if own is None or stats is None else int(stats.sum()),
        own_samples=None if own is None else int(own.sum()), new_concepts=[], bundle_sha256=bundle_sha256,
        anchors_sha256=anchors_sha256, edgecvm_version=str(meta.get("edgecvm_version", "?")))


def _counts(arrays: Mapping[str, np.ndarray], key: str, known: int) -> np.ndarray | None:
    """Per-concept sample counts of the statistics under ``key`` (None when the state has none: ``sgd``)."""
    counts = arrays.get(key)
    if counts is None:
        return None
    if counts.ndim != 1 or counts.size > known or not np.isfinite(counts).all() or (counts < 0).any():
        raise ValueError(f"{key} is not one count >= 0 per known concept")
    return np.pad(counts, (0, known - counts.size))


def _new_concepts(state_dir: str | Path) -> list[str]:
    own = load_new_concepts(state_dir, None)
    return [] if own is None else list(own.names)
