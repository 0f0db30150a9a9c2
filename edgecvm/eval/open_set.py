"""The open-set scenario: teach some of the classes, then ask about the held-out images of all of them.

A seeded ``known_fraction`` of the classes is taught class-incrementally
(``n_tasks`` tasks, one pass); every held-out image is then answered. Each
method says how sure it is that a frame is one of its taught classes with its
natural score:

- ``cvm``: the device's open-set score (learning/open_set.py), and its own
  threshold, calibrated on its replayed samples scored leave-one-out;
- ``slda``: the largest discriminant score; ``ncm``: minus the squared
  distance to the nearest class mean; ``softmax``/``softmax-replay``: the
  maximum softmax probability (Hendrycks & Gimpel 2017).

Figures per method: AUROC known against unknown; the FPR at 95 % TPR (the
usual definition: the threshold set on the known test images); closed-set
accuracy on the known classes; and at the method's calibrated threshold, the
known recall, the FPR and the open-set accuracy (the right concept for a
known class, "unknown" for the others). The peers have no leave-one-out
calibration: their threshold is the same quantile of their scores on
``PEER_CALIBRATION`` training samples of the known classes, scored by the
model that learned them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecvm.errors import BadInputError
from edgecvm.eval.feature_cache import FeatureTable
from edgecvm.eval.harness import CHUNK, LearnerMethod, MethodContext, build_method
from edgecvm.eval.metrics import ResourceMeter
from edgecvm.eval.peers import ContinualMethod, NearestClassMean, SoftmaxHead, StreamingLDA
from edgecvm.eval.scenarios import Scenario, Task, TestSet, TrainStream, split_table
from edgecvm.learning.open_set import calibrate_threshold
from edgecvm.reporting import ProgressFactory, silent

OPEN_SET = "open-set"
OPEN_SET_METHODS = ("cvm", "slda", "ncm", "softmax-replay")
PEER_CALIBRATION = 256  # training samples a peer's threshold is set on
REPORT_TPR = 0.95  # the TPR of the reported FPR


@dataclass(frozen=True)
class OpenSetResult:
    name: str
    auroc: float
    fpr_at_95_tpr: float
    closed_set: float  # accuracy on the known classes' images, among the known classes
    threshold_source: str  # "leave-one-out replay" (cvm) or "training samples" (peers)
    known_recall: float  # at the calibrated threshold
    fpr: float  # at the calibrated threshold
    open_set_accuracy: float  # at the calibrated threshold
    train_seconds: float
    roc: tuple[list[float], list[float]]  # (FPR, TPR) points, for the plot

    def as_dict(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if k != "roc"}


def build_open_set(table: FeatureTable, known_fraction: float, n_tasks: int, seed: int = 0,
                   holdout: str = "val") -> tuple[Scenario, np.ndarray]:
    """The class-incremental stream of the known classes (a seeded choice) and, as ``test``, every held-out image;
    and the known class ids."""
    n_classes = len(table.concepts)
    n_known = round(known_fraction * n_classes)
    if not 0.0 < known_fraction < 1.0 or not 1 <= n_known < n_classes:
        raise BadInputError(f"--known-fraction must leave at least one known and one unknown class of {n_classes}, "
                            f"got {known_fraction}")
    if not 1 <= n_tasks <= n_known:
        raise BadInputError(f"--tasks must be between 1 and the number of known classes ({n_known}), got {n_tasks}")
    train, held_out = split_table(table, holdout)
    rng = np.random.default_rng(seed)
    known = rng.permutation(n_classes)[:n_known]
    tasks = []
    for index, classes in enumerate(np.array_split(known, n_tasks)):
        order = rng.permutation(np.flatnonzero(np.isin(train.labels, classes)))
        in_task = np.isin(held_out.labels, classes)
        tasks.append(Task(index, np.sort(classes), TrainStream(train.features, train.labels, order),
                          TestSet(held_out.features[in_task], held_out.labels[in_task])))
    test = TestSet(held_out.features, held_out.labels)
    return Scenario(OPEN_SET, table.concepts, tuple(tasks), test, seed, 1, None, holdout), np.sort(known)


def run_open_set(scenario: Scenario, known: np.ndarray, names: Sequence[str], ctx: MethodContext,
                 progress: ProgressFactory = silent) -> list[OpenSetResult]:
    for name in names:
        if name.startswith("cvm-noreplay") or name == "joint":
            raise BadInputError(f"{name} has no open-set calibration here; choose from cvm, cvm:HEAD, "
                                f"{', '.join(OPEN_SET_METHODS[1:])}, softmax")
    return [_run_one(name, scenario, known, ctx, progress) for name in names]


def _run_one(name: str, scenario: Scenario, known: np.ndarray, ctx: MethodContext,
             progress: ProgressFactory) -> OpenSetResult:
    method = build_method(name, ctx)
    meter = ResourceMeter()
    with progress(sum(len(t.train) for t in scenario.tasks), f"{name:>14}", "samples") as bar:
        meter.start()
        for task in scenario.tasks:
            for features, labels in task.train.batches(CHUNK):
                method.learn(features, labels)
                bar.update(labels.size)
        meter.stop()
    test = scenario.test
    is_known = np.isin(test.labels, known)
    closed, score = _answers(method, test.features)
    if isinstance(method, LearnerMethod):
        threshold, source = 0.0, "leave-one-out replay"  # the device's margins are score - its own threshold
    else:
        stream = np.concatenate([t.train.order for t in scenario.tasks])
        rows = np.random.default_rng(ctx.config.seed).choice(stream, size=min(PEER_CALIBRATION, stream.size),
                                                             replace=False)
        calibration = calibrate_threshold(_answers(method, scenario.tasks[0].train.features[rows])[1], REPORT_TPR)
        threshold, source = (math.inf if calibration is None else calibration), "training samples"
    accepted = score >= threshold
    right = closed == test.labels
    fpr, tpr = roc_curve(score[is_known], score[~is_known])
    return OpenSetResult(
        name, auroc(score[is_known], score[~is_known]), fpr_at_tpr(score[is_known], score[~is_known], REPORT_TPR),
        float(right[is_known].mean()), source, float(accepted[is_known].mean()), float(accepted[~is_known].mean()),
        float(np.mean(np.where(is_known, accepted & right, ~accepted))), meter.result().seconds,
        (fpr.tolist(), tpr.tolist()))


def _answers(method: ContinualMethod, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Closed-set class id and the known-class score of each frame (higher: more likely a taught class)."""
    if isinstance(method, LearnerMethod):
        predictions = method.learner.predict_features(features, top_k=1, vocab="known")
        if predictions and predictions[0].known_margin is None:
            raise BadInputError(f"{method.name}: the learner has no open-set calibration (too few replayed samples, "
                                "or a head method without an open-set score)")
        ids = {c.casefold(): i for i, c in enumerate(method.concepts)}
        return (np.array([ids[p.top_k[0][0].casefold()] for p in predictions], dtype=np.int64),
                np.array([p.known_margin for p in predictions], dtype=np.float64))
    if isinstance(method, (NearestClassMean, StreamingLDA)):
        seen, scores = method.scores(features)
        return seen[np.argmax(scores, axis=1)], scores.max(axis=1)
    if isinstance(method, SoftmaxHead):
        p = method.probabilities(features)
        return np.argmax(p, axis=1), p.max(axis=1)
    raise BadInputError(f"{method.name} has no open-set score")


def auroc(known: np.ndarray, unknown: np.ndarray) -> float:
    """Probability that a known image scores above an unknown one, ties counting half (Mann-Whitney U)."""
    _, inverse, counts = np.unique(np.concatenate([known, unknown]), return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = (ends - (counts - 1) / 2.0)[inverse]  # the average rank of each distinct value
    return float((ranks[: known.size].sum() - known.size * (known.size + 1) / 2) / (known.size * unknown.size))


def fpr_at_tpr(known: np.ndarray, unknown: np.ndarray, tpr: float) -> float:
    """Share of unknown images accepted at the threshold that accepts ``tpr`` of the known ones."""
    return float(np.mean(unknown >= np.quantile(known, 1.0 - tpr, method="lower")))


def roc_curve(known: np.ndarray, unknown: np.ndarray, points: int = 101) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) at ``points`` thresholds spread over the score quantiles."""
    thresholds = np.quantile(np.concatenate([known, unknown]), np.linspace(0.0, 1.0, points))
    return (np.array([np.mean(unknown >= t) for t in thresholds]), np.array([np.mean(known >= t) for t in thresholds]))


def table(results: Sequence[OpenSetResult]) -> str:
    head = ("| method | AUROC | FPR at 95 % TPR | closed-set acc. | known recall | FPR | open-set acc. | threshold from |"
            "\n|---|---:|---:|---:|---:|---:|---:|---|")
    rows = [f"| {r.name} | {r.auroc:.3f} | {100 * r.fpr_at_95_tpr:.1f} | {100 * r.closed_set:.1f} | "
            f"{100 * r.known_recall:.1f} | {100 * r.fpr:.1f} | {100 * r.open_set_accuracy:.1f} | {r.threshold_source} |"
            for r in results]
    return "\n".join([head, *rows])


def plot(path: Path, results: Sequence[OpenSetResult], title: str) -> None:
    """ROC curves, known against unknown, one per method, with each method's calibrated operating point."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BadInputError("--plot needs matplotlib: pip install edgecvm[plots]") from None
    fig, ax = plt.subplots(figsize=(6, 5))
    for r in results:
        line, = ax.plot(r.roc[0], r.roc[1], label=f"{r.name} (AUROC {r.auroc:.3f})",
                        linewidth=2.5 if r.name.startswith("cvm") else 1.2)
        ax.plot([r.fpr], [r.known_recall], marker="o", color=line.get_color())
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
    ax.set_xlabel("unknown images accepted (FPR)")
    ax.set_ylabel("known images accepted (TPR)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
