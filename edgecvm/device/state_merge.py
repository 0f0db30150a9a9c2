"""Several devices' state dirs merged into one that knows what each was taught, without a server.

For a fleet updated by copying files, or a device too small to host a Flower
node. The first state dir is the device that will use the result: its own
statistics, replay buffer, blend and counters are kept, and its head is
solved from its own statistics merged with every other input's own
(learning/fleet.py). So merging again later, with the same or newer copies,
never counts a sample twice. Every input is loaded as a state (checksum,
bundle and anchor identity) and its statistics are checked (merge.check)
before anything is written; the result is written atomically, like any
checkpoint, with the previous file kept.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edgecvm.device.profiles import learner_config, load_profile
from edgecvm.device.state import StateIdentity, has_state, load_state, save_state
from edgecvm.errors import BadInputError
from edgecvm.formats.bundle import load_bundle, load_head_and_anchors
from edgecvm.learning.fleet import adopt_fleet, own_statistics
from edgecvm.learning.learner import Learner
from edgecvm.learning.merge import NamedStatistics, check, merge

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MergeReport:
    out: Path
    own_samples: dict[str, int]  # state dir -> the samples it was taught itself (what it added)
    samples: int  # behind the merged head: every input's own samples
    concepts: list[str]  # the known concepts of the result, in its order

    def as_dict(self) -> dict[str, object]:
        return {"out": str(self.out), "own_samples": self.own_samples, "samples": self.samples,
                "concepts": len(self.concepts)}


def merge_states(bundle: str | os.PathLike[str], states: Sequence[str | os.PathLike[str]],
                 out: str | os.PathLike[str], profile: str = "host") -> MergeReport:
    """Merge ``states`` (the first one is the device that keeps the result) into ``out``.

    ``out`` is the first state dir (updated in place) or a dir without a
    state. ``profile`` sizes the first device's replay buffer, as when it
    resumes. ``BadInputError`` naming the input for anything that does not
    merge; nothing is written then.
    """
    dirs = [Path(s) for s in states]
    if len(dirs) < 2:
        raise BadInputError("give at least two state dirs to merge")
    seen: dict[Path, Path] = {}
    for d in dirs:
        if d.resolve() in seen:
            raise BadInputError(f"{d}: given twice (as {seen[d.resolve()]}); each device's state counts once")
        seen[d.resolve()] = d
        if not has_state(d):
            raise BadInputError(f"{d}: no learner state here")
    out_dir = Path(out)
    if out_dir.resolve() != dirs[0].resolve() and has_state(out_dir):
        raise BadInputError(f"{out_dir}: already holds a state; write the merge to the first state dir "
                            f"({dirs[0]}) or to a new dir")
    bundle_ = load_bundle(str(bundle))
    head, anchors = load_head_and_anchors(bundle_)
    identity = StateIdentity.of_bundle(bundle_)
    config = learner_config(load_profile(profile))

    def own_of(state_dir: Path, learner: Learner) -> NamedStatistics:
        try:
            named = own_statistics(learner)
        except BadInputError as exc:
            raise BadInputError(f"{state_dir}: {exc}") from None
        check(named, str(state_dir), learner.feature_dim)
        return named

    base = load_state(dirs[0], head, anchors, identity, config)
    own = {str(dirs[0]): own_of(dirs[0], base).n}
    others = NamedStatistics.empty(base.feature_dim)
    for d in dirs[1:]:
        named = own_of(d, load_state(d, head, anchors, identity, config))
        others = merge(others, named)
        own[str(d)] = named.n
        log.info("%s: %d samples of %d concepts merged", d, named.n, len(named.concepts))
    adopt_fleet(base, others)
    save_state(out_dir, base, identity)
    return MergeReport(out_dir, own, sum(own.values()), list(base.known))
