"""A device's side of a fleet round, on its state dir: share what it was taught, then adopt the fleet's total.

The ClientApp (client_app.py) is this plus Flower's messages. A round is two
steps: ``share`` encodes the device's *own* statistics (learning/fleet.py),
and ``adopt`` solves its head from the fleet total the server summed, which
holds exactly what this device shared. If the state changed in between (the
device learned meanwhile), the total no longer holds what it has now and is
not adopted; the next round brings it in. The state is written atomically
(device/state.py), its previous checkpoint kept, so nothing learned is lost
whatever happens to the round.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecvm.device.profiles import learner_config, load_profile
from edgecvm.device.state import StateIdentity, load_state, save_state
from edgecvm.errors import BadInputError
from edgecvm.fleet.update import Identity, Update, decode, digest, encode
from edgecvm.formats.bundle import load_bundle, load_head_and_anchors
from edgecvm.learning.fleet import adopt_total, own_statistics
from edgecvm.learning.learner import Learner
from edgecvm.learning.merge import check

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Adopted:
    samples: int  # behind the head now: the fleet's
    concepts: int  # known now

    def as_dict(self) -> dict[str, int]:
        return {"samples": self.samples, "concepts": self.concepts}


class DeviceNode:
    """One device's state dir and the bundle it was learned with."""

    def __init__(self, state_dir: str | os.PathLike[str], bundle: str | os.PathLike[str], profile: str = "host"):
        self.state_dir = Path(state_dir)
        bundle_ = load_bundle(str(bundle))
        self._head, self._anchors = load_head_and_anchors(bundle_)
        self._state_identity = StateIdentity.of_bundle(bundle_)
        self._config = learner_config(load_profile(profile))
        self.identity = Identity(bundle_.sha256, bundle_.manifest.anchors_sha256, self._head.feature_dim)

    def _load(self) -> Learner:
        return load_state(self.state_dir, self._head, self._anchors, self._state_identity, self._config)

    def _encoded_own(self, learner: Learner, dtype: str) -> tuple[dict[str, np.ndarray], dict[str, object]]:
        try:
            own = own_statistics(learner)
        except BadInputError as exc:
            raise BadInputError(f"{self.state_dir}: {exc}") from None
        return encode(Update(self.identity, own), dtype)

    def share(self, dtype: str = "float32") -> tuple[dict[str, np.ndarray], dict[str, object]]:
        """This device's own statistics, encoded (update.py)."""
        return self._encoded_own(self._load(), dtype)

    def adopt(self, arrays: Mapping[str, np.ndarray], config: Mapping[str, object], shared_digest: str,
              dtype: str = "float32") -> Adopted:
        """Solve the head from the fleet total (``arrays``, ``config``: encoded like an update) and save the state;
        ``shared_digest`` is the digest of the update the server summed for this device. ``BadInputError`` (and
        the state untouched) when the total does not fit this device or holds another update than its own now."""
        source = "the fleet total"
        total = decode(arrays, config, source)
        if total.identity != self.identity:
            raise BadInputError(f"{source} was learned with another bundle or anchor file than {self.state_dir}")
        check(total.statistics, source, self.identity.feature_dim)
        learner = self._load()
        if digest(*self._encoded_own(learner, dtype)) != shared_digest:
            raise BadInputError(f"{self.state_dir}: the state changed since it was shared; the fleet total is not "
                                f"adopted this round (the next one brings it in)")
        adopt_total(learner, total.statistics)
        save_state(self.state_dir, learner, self._state_identity)
        log.info("%s: head solved from the fleet's %d samples of %d concepts", self.state_dir,
                 total.statistics.n, len(total.statistics.concepts))
        return Adopted(total.statistics.n, len(learner.known))
