"""Real features: Tiny-ImageNet split over 20 devices, merged, answers as one learner taught everything.

Uses ``make eval``'s bundle and feature cache, else a 20-class slice extracted for the session
(tests/eval_features.py): 20 classes x up to 100 training images, either one class per device or a random mix. The merged statistics must equal one
learner's in float32 rounding, and a head solved from them (the discriminant alone: the ConSE blend is fitted
on each device's own replay buffer) must score the same on the classes' val images within 0.1 point.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgecvm.eval.feature_cache import FeatureTable
from edgecvm.formats.bundle import load_bundle, load_head_and_anchors
from edgecvm.learning.analytic_head import AnalyticHead, ClassStatistics
from edgecvm.learning.fleet import adopt_fleet
from edgecvm.learning.learner import Learner
from edgecvm.learning.merge import NamedStatistics, from_class_statistics, merge

pytestmark = [pytest.mark.data, pytest.mark.slow]
CLASSES, TRAIN, DEVICES = 20, 100, 20


@pytest.fixture(scope="module")
def eval_bundle(real_features: tuple[Path, FeatureTable]) -> Path:
    return real_features[0]


@pytest.fixture(scope="module")
def table(real_features: tuple[Path, FeatureTable]) -> FeatureTable:
    return real_features[1]


def _learner(bundle: Path) -> Learner:
    head, anchors = load_head_and_anchors(load_bundle(str(bundle)))
    return Learner(head, anchors, method=AnalyticHead("lda", head, use_conse=False))


@pytest.mark.parametrize("split", ["one class per device", "random mix"])
def test_twenty_devices_merged_answer_as_one_learner(table: FeatureTable, eval_bundle: Path, split: str):
    rng = np.random.default_rng(0)
    classes = np.arange(0, len(table.concepts), len(table.concepts) // CLASSES)[:CLASSES]
    chosen = np.isin(table.labels, classes)
    train = rng.permutation(np.flatnonzero(chosen & table.is_train & (table.numbers < TRAIN)))
    val = np.flatnonzero(chosen & ~table.is_train)
    names = [table.concepts[i] for i in table.labels[train]]

    single = _learner(eval_bundle)
    single.observe_features(table.features[train], names)  # in one update: one solve (the statistics do not care)

    if split == "one class per device":
        parts = [np.flatnonzero(table.labels[train] == c) for c in classes]
    else:
        parts = np.array_split(rng.permutation(train.size), DEVICES)
    merged = NamedStatistics.empty(table.features.shape[1])
    for part in parts:  # each device's statistics, its concepts numbered in the order it met them
        order = list(dict.fromkeys(table.labels[train[part]].tolist()))
        stats = ClassStatistics(table.features.shape[1])
        stats.add(table.features[train[part]], np.array([order.index(y) for y in table.labels[train[part]]]))
        merged = merge(merged, from_class_statistics(stats, [table.concepts[y] for y in order]))
    fleet = _learner(eval_bundle)
    adopt_fleet(fleet, merged)

    want, got = single.method.stats, fleet.method.stats
    rows = [fleet.known.index(c) for c in single.known]
    np.testing.assert_array_equal(got.counts[rows], want.counts)
    np.testing.assert_allclose(got.sums[rows], want.sums, rtol=1e-5, atol=1e-5 * np.abs(want.sums).max())
    scatter = want.within_scatter()
    np.testing.assert_allclose(got.within_scatter(), scatter, rtol=0, atol=1e-5 * np.abs(scatter).max())

    truth = [table.concepts[y] for y in table.labels[val]]
    accuracy = {name: np.mean([p.concept == t for p, t in zip(learner.predict_features(table.features[val]), truth,
                                                                 strict=True)])
                for name, learner in (("single", single), ("fleet", fleet))}
    assert accuracy["single"] > 0.5
    assert abs(accuracy["fleet"] - accuracy["single"]) <= 0.001, accuracy
