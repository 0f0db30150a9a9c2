"""Runs continual learners side by side on one scenario of cached features and measures them.

Method names (``--methods``):

- ``cvm``: the on-device ``Learner`` with head method ``CVM_HEAD_METHOD``
  ("lda", the best measured, docs/results.md) and the profile's replay
  buffer; ``cvm-noreplay``: the same without replay;
  ``cvm:NAME`` / ``cvm-noreplay:NAME``: with head method NAME, a product
  method from ``head_methods.HEAD_METHODS`` (e.g. ``cvm:sgd``, the gradient
  head) or a research variant from ``variants.VARIANTS`` (e.g.
  ``cvm:lda-noconse``).
  These call ``Learner.observe_features`` one frame at a time and
  ``Learner.predict_features``: the very update and decision the device runs.
- ``ncm``, ``slda``, ``softmax``, ``softmax-replay``: the peers (peers.py);
  ``joint``: the softmax head trained offline on everything (upper bound).

For every method: the accuracy matrix over tasks, wall time and peak traced
memory of learning, the bytes of state it keeps; for CVM methods also the
learner's memory plan against the profile's budget, zero-shot accuracy on
the concepts not taught yet (answered among those concepts only), to show
that learning did not destroy the zero-shot map, and the generalised
zero-shot S, U and H answered over the whole anchor file (gzsl.py). The
closed-set accuracy is the device's answer among the taught concepts with
the open-set decision left out (the best taught concept even when it answers
"unknown").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from edgecvm.device.memory_plan import plan_for_learner
from edgecvm.device.profiles import DeviceProfile
from edgecvm.errors import BadInputError
from edgecvm.eval import gzsl
from edgecvm.eval.metrics import Accuracy, AccuracyMatrix, ResourceMeter
from edgecvm.eval.peers import ContinualMethod, NearestClassMean, SoftmaxHead, StreamingLDA, train_joint
from edgecvm.eval.scenarios import Scenario, TestSet
from edgecvm.eval.variants import head_method_names, is_variant, make_variant
from edgecvm.formats.anchors import AnchorSet
from edgecvm.formats.head_file import HeadParams
from edgecvm.learning.head_methods import DEFAULT_METHOD
from edgecvm.learning.learner import Learner, LearnerConfig
from edgecvm.learning.open_set import DEFAULT_TARGET_TPR
from edgecvm.learning.replay import ReplayBuffer, capacity_for_bytes
from edgecvm.reporting import ProgressFactory, silent

PEERS = ("ncm", "slda", "softmax", "softmax-replay", "joint")
CVM_PREFIXES = ("cvm", "cvm-noreplay")
DEFAULT_METHODS = ("cvm", "cvm-noreplay", "ncm", "slda", "softmax", "softmax-replay", "joint")
# Head method of a bare ``cvm``: the device's default, the best one measured.
CVM_HEAD_METHOD = DEFAULT_METHOD
CHUNK = 500  # stream samples handed to a method per call (progress bar granularity)


@dataclass(frozen=True)
class HarnessConfig:
    profile: DeviceProfile  # replay budget, replay minibatch and memory budget, as on the device
    backbone_bytes: int  # for the CVM learner's memory plan
    input_size: int
    seed: int = 0
    softmax_lr: float = 1e-3
    joint_epochs: int = 10
    joint_batch: int = 32
    unknown_tpr: float | None = DEFAULT_TARGET_TPR  # the CVM learners' open-set target; None: always a taught concept


@dataclass
class MethodResult:
    name: str
    metrics: dict[str, object]  # AccuracyMatrix.result()
    train_seconds: float
    peak_mb: float  # traced allocations while learning
    state_mb: float  # what the method keeps between samples
    memory_plan_mb: float | None = None  # CVM: the learner's whole-process plan
    fits_budget: bool | None = None
    zero_shot: dict[str, object] = field(default_factory=dict)  # CVM only

    def as_dict(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items()}


class LearnerMethod:
    """The device's ``Learner`` behind the harness interface; class ids <-> concept names."""

    def __init__(self, name: str, learner: Learner, concepts: Sequence[str]) -> None:
        self.name = name
        self.learner = learner
        self.concepts = list(concepts)
        self._ids = {c.casefold(): i for i, c in enumerate(self.concepts)}

    def learn(self, features: np.ndarray, labels: np.ndarray) -> None:
        for i in range(features.shape[0]):  # one frame per update, as `edgecvm learn` does
            self.learner.observe_features(features[i : i + 1], [self.concepts[labels[i]]])

    def predict(self, features: np.ndarray) -> np.ndarray:
        predictions = self.learner.predict_features(features, top_k=1, vocab="known")
        return np.array([self._ids[p.top_k[0][0].casefold()] for p in predictions], dtype=np.int64)

    def predict_among(self, features: np.ndarray, class_ids: np.ndarray, anchors: np.ndarray) -> np.ndarray:
        """Nearest of the given concepts' anchors (rows of ``anchors``, one per class id) to the head's embedding."""
        return class_ids[np.argmax(self.learner.method.embed(features) @ anchors[class_ids].T, axis=1)]

    def nbytes(self) -> int:
        return self.learner.method.nbytes(self.learner.replay.capacity) + self.learner.replay.nbytes


@dataclass(frozen=True)
class MethodContext:
    """Everything a method factory needs."""

    config: HarnessConfig
    head: HeadParams
    anchors: AnchorSet
    concepts: tuple[str, ...]
    feature_dim: int


def method_names(spec: str) -> list[str]:
    """Split and validate ``--methods``: unknown names fail listing the valid ones."""
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise BadInputError("--methods is empty; e.g. --methods " + ",".join(DEFAULT_METHODS))
    for name in names:
        prefix, _, head_method = name.partition(":")
        if name in PEERS or (prefix in CVM_PREFIXES and (not head_method or head_method in head_method_names())):
            continue
        raise BadInputError(f"unknown method {name!r}; choose from {', '.join(PEERS)}, cvm, cvm-noreplay, or "
                            f"cvm:NAME / cvm-noreplay:NAME with NAME one of {', '.join(head_method_names())}")
    if len(set(names)) != len(names):
        raise BadInputError(f"--methods lists a method twice: {spec}")
    return names


def build_method(name: str, ctx: MethodContext) -> ContinualMethod:
    profile, n_classes, dim = ctx.config.profile, len(ctx.concepts), ctx.feature_dim
    prefix, _, head_method = name.partition(":")
    if prefix in CVM_PREFIXES:
        replay_bytes = profile.replay_bytes if prefix == "cvm" else 0
        learner = _learner(ctx, head_method or CVM_HEAD_METHOD, replay_bytes)
        return LearnerMethod(name, learner, ctx.concepts)
    if name == "ncm":
        return NearestClassMean(dim, n_classes)
    if name == "slda":
        return StreamingLDA(dim, n_classes)
    replay = ReplayBuffer.from_bytes(profile.replay_bytes, dim, ctx.config.seed) if name == "softmax-replay" else None
    return SoftmaxHead(dim, n_classes, lr=ctx.config.softmax_lr, replay=replay, replay_batch=profile.batch_size,
                       seed=ctx.config.seed, name=name)


def _learner(ctx: MethodContext, head_method: str, replay_bytes: int) -> Learner:
    """The device's ``Learner`` with ``head_method``: a product method by name, an eval-only variant built here
    (the device's Learner resolves names from the product registry only, so it can never run or resume one)."""
    variant = is_variant(head_method)
    config = LearnerConfig(method=None if variant else head_method, replay_bytes=replay_bytes,
                           batch_size=ctx.config.profile.batch_size, seed=ctx.config.seed,
                           unknown_tpr=ctx.config.unknown_tpr)
    method = make_variant(head_method, ctx.head, capacity_for_bytes(replay_bytes, ctx.head.feature_dim)) if variant else None
    return Learner(ctx.head, ctx.anchors, config, method=method)


def run(scenario: Scenario, names: Sequence[str], ctx: MethodContext,
        progress: ProgressFactory = silent) -> list[MethodResult]:
    """Every named method through ``scenario``, one after the other (zero-shot: the CVM methods only).

    ``progress`` gets one bar per method (the CLI passes a terminal bar; the default shows nothing)."""
    cvm = [name for name in names if name.partition(":")[0] in CVM_PREFIXES]
    if scenario.name == "zero-shot":
        return [zero_shot(name, scenario, ctx) for name in cvm]
    # Before any teaching every head method answers with the exported head: measured once.
    before = [_unseen_accuracy(_untaught(ctx, cvm[0]), scenario, t, ctx) for t in range(len(scenario.tasks) - 1)
              ] if cvm else []
    gzsl_before = gzsl.untaught_before(_untaught(ctx, cvm[0]).learner, scenario) if cvm else []
    return [run_method(name, scenario, ctx, before, progress, gzsl_before) for name in names]


def run_method(name: str, scenario: Scenario, ctx: MethodContext, unseen_before: Sequence[float] = (),
               progress: ProgressFactory = silent, gzsl_before: Sequence[float] = ()) -> MethodResult:
    meter = ResourceMeter()
    meter.start()
    method = build_method(name, ctx)
    meter.stop()
    tasks = scenario.tasks
    matrix = AccuracyMatrix(len(tasks))
    unseen_zero_shot: list[float] = []
    gzsl_after: list[dict[str, float]] = []
    total = sum(len(t.train) for t in tasks) * (ctx.config.joint_epochs if name == "joint" else 1)
    with progress(total, f"{name:>14}", "samples") as bar:
        if name == "joint":
            meter.start()
            _train_joint(method, scenario, ctx, bar.update)
            meter.stop()
            _evaluate(method, scenario, len(tasks) - 1, matrix)
        else:
            for task in tasks:
                meter.start()
                for features, labels in task.train.batches(CHUNK):
                    method.learn(features, labels)
                    bar.update(labels.size)
                meter.stop()
                _evaluate(method, scenario, task.index, matrix)
                if isinstance(method, LearnerMethod):
                    gzsl_after.append(gzsl.after_task(method.learner, scenario, task.index))
                if isinstance(method, LearnerMethod) and task.index < len(tasks) - 1:
                    unseen_zero_shot.append(_unseen_accuracy(method, scenario, task.index, ctx))
    usage = meter.result()
    result = MethodResult(name, matrix.result(), usage.seconds, usage.peak_bytes / 2**20, method.nbytes() / 2**20)
    if isinstance(method, LearnerMethod):
        plan = plan_for_learner(ctx.config.profile, ctx.config.backbone_bytes, ctx.config.input_size, method.learner)
        result.memory_plan_mb = plan.total_bytes / 2**20
        result.fits_budget = plan.total_bytes <= ctx.config.profile.memory_budget_mb * 2**20
        result.zero_shot = {"unseen_after_task": unseen_zero_shot, "unseen_before_learning": list(unseen_before),
                            "unseen_mean": _nanmean(unseen_zero_shot), "unseen_before_mean": _nanmean(unseen_before),
                            "gzsl": gzsl.summary(gzsl_after, gzsl_before)}
    return result


def _train_joint(method: ContinualMethod, scenario: Scenario, ctx: MethodContext, tick: Callable[[int], None]) -> None:
    if not isinstance(method, SoftmaxHead):
        raise TypeError("joint training needs the softmax head")
    streams = [t.train for t in scenario.tasks]
    rows = np.concatenate([s.order for s in streams])
    rows = np.unique(rows)  # each training sample once per epoch
    features, labels = streams[0].features[rows], streams[0].labels[rows]
    rng = np.random.default_rng(ctx.config.seed)
    for _ in range(ctx.config.joint_epochs):
        train_joint(method, features, labels, epochs=1, batch=ctx.config.joint_batch, rng=rng)
        tick(labels.size)


def _evaluate(method: ContinualMethod, scenario: Scenario, after: int, matrix: AccuracyMatrix) -> None:
    """Fill row ``after`` of the matrix: accuracy on each task's test set so far, no task id given."""
    seen = scenario.tasks[: after + 1]
    test = TestSet(np.concatenate([t.test.features for t in seen]), np.concatenate([t.test.labels for t in seen]))
    predicted = method.predict(test.features)
    start = 0
    for task in seen:
        end = start + task.test.labels.size
        accuracy = Accuracy()
        accuracy.update(predicted[start:end], test.labels[start:end])
        matrix.update(after, task.index, accuracy.result())
        start = end


def _unseen_accuracy(method: LearnerMethod, scenario: Scenario, after: int, ctx: MethodContext) -> float:
    """Zero-shot accuracy on the test images of the tasks not taught yet, answering among their concepts."""
    later = scenario.tasks[after + 1 :]
    if not later:
        return math.nan
    class_ids = np.concatenate([t.classes for t in later])
    features = np.concatenate([t.test.features for t in later])
    labels = np.concatenate([t.test.labels for t in later])
    accuracy = Accuracy()
    accuracy.update(method.predict_among(features, class_ids, _dataset_anchors(ctx)), labels)
    return accuracy.result()


def _untaught(ctx: MethodContext, name: str) -> LearnerMethod:
    method = build_method(name, ctx)
    if not isinstance(method, LearnerMethod):
        raise TypeError(f"{name} is not a CVM method")
    return method


def _dataset_anchors(ctx: MethodContext) -> np.ndarray:
    """Anchor row per class id; every dataset concept must be in the bundle's anchor file."""
    return ctx.anchors.vectors[ctx.anchors.indices_of(ctx.concepts)]


def zero_shot(name: str, scenario: Scenario, ctx: MethodContext) -> MethodResult:
    """Accuracy before any teaching: among the dataset's concepts and among every concept in the anchor file."""
    method = _untaught(ctx, name)
    test = scenario.test
    meter = ResourceMeter()
    meter.start()
    among_dataset = Accuracy()
    among_dataset.update(method.predict_among(test.features, np.arange(len(ctx.concepts)), _dataset_anchors(ctx)),
                         test.labels)
    names = [p.concept.casefold() for p in method.learner.predict_features(test.features, top_k=1, vocab="all")]
    among_all = Accuracy()
    among_all.update(np.array(names), np.array([ctx.concepts[i].casefold() for i in test.labels]))
    meter.stop()
    usage = meter.result()
    metrics = {"dataset_vocabulary": among_dataset.result(), "anchor_vocabulary": among_all.result(),
               "dataset_concepts": len(ctx.concepts), "anchor_concepts": len(ctx.anchors)}
    return MethodResult(name, metrics, usage.seconds, usage.peak_bytes / 2**20, method.nbytes() / 2**20,
                        zero_shot=metrics)


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan
