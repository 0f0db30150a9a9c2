"""A learner taking in what the rest of a fleet learned, without ever counting a sample twice.

A device in a fleet keeps two sets of class statistics in its ``lda`` head
(analytic_head.py): its *own*, added to only by what it is taught, and the
ones its head is solved from, its own merged with every other device's own
(merge.py). Only own statistics are shared, and the solved ones are rebuilt
from own + others at every exchange; so a device's samples enter the fleet
once however often it shares them, and teaching between exchanges adds to
both sets: the head goes on learning locally.
"""

from __future__ import annotations

from edgecvm.errors import BadInputError
from edgecvm.learning.analytic_head import AnalyticHead
from edgecvm.learning.learner import Learner
from edgecvm.learning.merge import NamedStatistics, from_class_statistics, merge, to_class_statistics


def _analytic_head(learner: Learner) -> AnalyticHead:
    if not isinstance(learner.method, AnalyticHead):
        raise BadInputError(f"only the 'lda' head learns from statistics that merge; this learner's head method "
                            f"is {learner.method.name!r}")
    return learner.method


def own_statistics(learner: Learner) -> NamedStatistics:
    """What this device was taught itself, keyed by concept name: what it shares with a fleet."""
    head = _analytic_head(learner)
    return from_class_statistics(head.own if head.own is not None else head.stats, learner.known)


def adopt_fleet(learner: Learner, others: NamedStatistics) -> None:
    """Solve ``learner``'s head from its own statistics merged with ``others`` (every other device's own, already
    checked: merge.check); concepts only the others were taught join the known ones, after this device's."""
    head = _analytic_head(learner)
    own = head.own if head.own is not None else head.stats
    _solve_from(learner, head, merge(from_class_statistics(own, learner.known), others))


def adopt_total(learner: Learner, total: NamedStatistics) -> None:
    """Solve ``learner``'s head from ``total``: every device's own statistics summed, this device's as they are now
    among them (a fleet server's sum); ``BadInputError`` when ``total`` holds fewer samples of a concept than this
    device was taught itself (then it cannot include them)."""
    head = _analytic_head(learner)
    own = from_class_statistics(head.own if head.own is not None else head.stats, learner.known)
    counts = dict(zip(total.concepts, total.counts.tolist(), strict=True))
    short = [c for c, n in zip(own.concepts, own.counts.tolist(), strict=True) if counts.get(c, 0) < n]
    if short:
        raise BadInputError(f"the fleet total holds fewer samples of {short[0]!r} than this device was taught itself")
    _solve_from(learner, head, total)


def _solve_from(learner: Learner, head: AnalyticHead, total: NamedStatistics) -> None:
    own = head.own if head.own is not None else head.stats
    known = set(learner.known)
    learner.restore_known([*learner.known, *(c for c in total.concepts if c not in known)])
    head.adopt_statistics(to_class_statistics(total, learner.known, own.dtype), own, learner.known_anchors)
