"""The few-shot curve, "how many examples do I need?": final accuracy against K images per class, in one run.

Each K is scenarios.py's few-shot scenario (the same seeded class order and
tasks for every K; K training images per class drawn with the seed) run by the
harness for every method; a point of the curve is a method's final accuracy on
the held-out images of all classes. A K larger than the smallest class allows is
left out with a warning naming that class, since a user's folder may hold 12
photos of one concept and 300 of another; the curve fails only when no K fits.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgecvm.errors import BadInputError
from edgecvm.eval.feature_cache import FeatureTable
from edgecvm.eval.harness import MethodContext, MethodResult, run
from edgecvm.eval.scenarios import build_scenario, split_table
from edgecvm.reporting import ProgressBar, ProgressFactory, silent

log = logging.getLogger("edgecvm.eval.few_shot_curve")

DEFAULT_SHOTS = (1, 2, 5, 10, 20)


@dataclass(frozen=True)
class CurvePoint:
    shots: int  # K, training images per class
    results: list[MethodResult]  # one per method, as the harness returns them

    def as_dict(self) -> dict[str, object]:
        return {"shots": self.shots, "results": [r.as_dict() for r in self.results]}


def feasible_shots(table: FeatureTable, shots: Sequence[int], holdout: str = "val") -> list[int]:
    """The Ks every class has enough training images for; a warning names the class that limits the rest."""
    train, _ = split_table(table, holdout)
    counts = np.bincount(train.labels, minlength=len(table.concepts))
    smallest = int(np.argmin(counts))
    kept = [k for k in shots if k <= counts[smallest]]
    if len(kept) < len(shots):
        left_out = ", ".join(str(k) for k in shots if k > counts[smallest])
        why = f"class {table.concepts[smallest]!r} has {counts[smallest]} training image(s), and each class needs K"
        if not kept:
            raise BadInputError(f"no K of the few-shot curve fits the data: {why}; add photos or pass smaller --shots")
        log.warning("K = %s left out of the few-shot curve: %s", left_out, why)
    return kept


def run_curve(
    table: FeatureTable, shots: Sequence[int], names: Sequence[str], ctx: MethodContext, n_tasks: int,
    seed: int = 0, epochs: int = 1, holdout: str = "val", progress: ProgressFactory = silent,
) -> list[CurvePoint]:
    """Every method through the few-shot scenario at each feasible K (``feasible_shots``), smallest K first."""
    points = []
    for k in sorted(feasible_shots(table, shots, holdout)):
        scenario = build_scenario(table, "few-shot", n_tasks, seed, epochs, k, holdout)

        def labelled(total: int | None, label: str, unit: str = "it", k: int = k) -> ProgressBar:
            return progress(total, f"K={k:<3} {label}", unit)

        points.append(CurvePoint(k, run(scenario, names, ctx, progress=labelled)))
    return points
