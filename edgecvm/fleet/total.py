"""A fleet server's running sum of the devices' updates: added as they arrive, so its memory does not grow with
the fleet, and a bad update is refused by name while the others still add up."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from edgecvm.errors import BadInputError
from edgecvm.fleet.update import Identity, decode, digest
from edgecvm.learning.merge import NamedStatistics, check, merge

log = logging.getLogger(__name__)


@dataclass
class FleetTotal:
    """The merged statistics of every accepted update (learning/merge.py: exact, with the between-device correction).

    ``identity`` is the fleet's: updates with another one are refused. None
    takes the first valid update's (a server told nothing about the bundle).
    """

    identity: Identity | None = None
    statistics: NamedStatistics | None = None
    accepted: dict[str, str] = field(default_factory=dict)  # source -> digest of the update it sent
    refused: dict[str, str] = field(default_factory=dict)  # source -> why

    def add(self, arrays: Mapping[str, np.ndarray], config: Mapping[str, object], source: str) -> bool:
        """Add one encoded update (update.py); False, with a warning naming ``source``, when it is refused."""
        try:
            update = decode(arrays, config, source)
            if self.identity is not None and update.identity != self.identity:
                raise BadInputError(f"{source}: refused: learned with another bundle, anchor file or head "
                                    f"({update.identity} is not the fleet's {self.identity})")
            if update.identity.head_method != "lda":
                raise BadInputError(f"{source}: refused: only the 'lda' head's statistics merge")
            check(update.statistics, source, update.identity.feature_dim)
            if source in self.accepted:
                raise BadInputError(f"{source}: refused: a second update in one round")
        except BadInputError as exc:
            log.warning("%s", exc)
            self.refused[source] = str(exc)
            return False
        self.identity = update.identity
        base = self.statistics if self.statistics is not None else NamedStatistics.empty(self.identity.feature_dim)
        self.statistics = merge(base, update.statistics)
        self.accepted[source] = digest(arrays, config)
        log.info("%s: %d samples of %d concepts added", source, update.statistics.n, len(update.statistics.concepts))
        return True
