"""Generalised zero-shot figures of a class-incremental run: S, U and H after every task.

After each task the device answers every held-out image over the whole anchor
file (``vocab="all"``, what a user of the ``serve`` page gets): S is the
accuracy on the classes taught so far, U on the classes not taught yet, and
H = 2SU / (S + U) their harmonic mean, the standard generalised zero-shot
figure (Xian et al. 2018). A head that pulls every frame toward a taught
concept has a high S and a U near zero; the open-set decision
(learning/open_set.py) hands the frames it judges untaught to the zero-shot
branch. ``U before learning`` is the accuracy of the untaught head on the same
classes, the zero-shot ability that learning should keep.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from edgecvm.eval.scenarios import Scenario
from edgecvm.learning.learner import Learner


def harmonic_mean(s: float, u: float) -> float:
    if math.isnan(s) or math.isnan(u):
        return math.nan
    return 2.0 * s * u / (s + u) if s + u > 0 else 0.0


def answers_over_vocabulary(learner: Learner, scenario: Scenario) -> np.ndarray:
    """Whether each held-out image of ``scenario.test`` is named right among every concept of the anchor file."""
    predicted = np.array([p.concept.casefold() for p in learner.predict_features(scenario.test.features, 1, "all")])
    truth = np.array([c.casefold() for c in scenario.concepts])[scenario.test.labels]
    return predicted == truth


def seen_mask(scenario: Scenario, after: int) -> np.ndarray:
    """Held-out images whose class is taught by the end of task ``after``."""
    taught = np.concatenate([t.classes for t in scenario.tasks[: after + 1]])
    return np.isin(scenario.test.labels, taught)


def untaught_before(untaught: Learner, scenario: Scenario) -> list[float]:
    """Per task (but the last), the untaught head's accuracy over the anchor file on the classes after it."""
    correct = answers_over_vocabulary(untaught, scenario)
    return [float(correct[~seen_mask(scenario, t)].mean()) for t in range(len(scenario.tasks) - 1)]


def after_task(learner: Learner, scenario: Scenario, after: int) -> dict[str, float]:
    """S, U and H after task ``after`` (U and H NaN after the last task: nothing is untaught)."""
    correct = answers_over_vocabulary(learner, scenario)
    seen = seen_mask(scenario, after)
    s = float(correct[seen].mean())
    u = float(correct[~seen].mean()) if (~seen).any() else math.nan
    return {"S": s, "U": u, "H": harmonic_mean(s, u)}


def summary(per_task: Sequence[dict[str, float]], before: Sequence[float]) -> dict[str, object]:
    """Per-task S/U/H, their means over the tasks with untaught classes, and U against U before learning."""
    with_untaught = [r for r in per_task if not math.isnan(r["U"])]
    ratios = [r["U"] / b for r, b in zip(with_untaught, before, strict=False) if b > 0]
    return {
        "S": [r["S"] for r in per_task], "U": [r["U"] for r in per_task], "H": [r["H"] for r in per_task],
        "U_before_learning": list(before),
        "mean_S": _mean([r["S"] for r in with_untaught]), "mean_U": _mean([r["U"] for r in with_untaught]),
        "mean_H": _mean([r["H"] for r in with_untaught]),
        "min_U_over_before": min(ratios) if ratios else math.nan,
    }


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if values else math.nan
