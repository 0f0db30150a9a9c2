"""A learner taking in the rest of a fleet: it then answers as one learner taught everything, keeps learning
locally, and never counts a sample twice however often it merges."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic_data import CONCEPTS, Clusters, anchor_set, head_params

from edgecvm.errors import BadInputError
from edgecvm.learning.analytic_head import AnalyticHead
from edgecvm.learning.fleet import adopt_fleet, own_statistics
from edgecvm.learning.learner import Learner, LearnerConfig
from edgecvm.learning.merge import NamedStatistics, merge

F, D = 32, 16
HEAD = head_params(feature_dim=F, concept_dim=D)
ANCHORS = anchor_set(D)


def _learner(shrinkage: float | None = 0.1) -> Learner:
    # float64 statistics and no ConSE blend: the discriminant alone, so answers can be compared to rounding
    head = AnalyticHead("lda", HEAD, shrinkage=shrinkage, use_conse=False, dtype=np.float64)
    return Learner(HEAD, ANCHORS, method=head)


def _teach(learner: Learner, x: np.ndarray, y: np.ndarray) -> None:
    for start in range(0, y.size, 8):
        learner.observe_features(x[start: start + 8], [CONCEPTS[i] for i in y[start: start + 8]])


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, Clusters]:
    clusters = Clusters(8, F, spread=1.2, seed=3)
    y = np.random.default_rng(seed).integers(0, 8, n)
    return clusters.draw(y), y, clusters


def _fleet_merge(devices: list[Learner]) -> None:
    """What a fleet round does: each device takes in every other device's own statistics."""
    owns = [own_statistics(d) for d in devices]
    for i, device in enumerate(devices):
        others = NamedStatistics.empty(F)
        for j, own in enumerate(owns):
            if j != i:
                others = merge(others, own)
        adopt_fleet(device, others)


@pytest.mark.parametrize("shrinkage", [0.1, None])
def test_after_a_merge_every_device_answers_as_one_learner_taught_everything(shrinkage: float | None):
    x, y, clusters = _data(480, seed=0)
    groups = ([0, 1, 2], [3, 4], [5, 6, 7])  # disjoint concepts: Ledoit-Wolf's fourth moments merge exactly too
    devices = [_learner(shrinkage) for _ in groups]
    for device, group in zip(devices, groups, strict=True):
        mine = np.isin(y, group)
        _teach(device, x[mine], y[mine])
    single = _learner(shrinkage)
    _teach(single, x, y)
    _fleet_merge(devices)

    test_y = np.repeat(np.arange(8), 20)
    test_x = clusters.draw(test_y)
    want = single.predict_features(test_x, top_k=3)
    for device in devices:
        assert sorted(device.known) == sorted(single.known)
        got = device.predict_features(test_x, top_k=3)
        assert [p.concept for p in got] == [p.concept for p in want]
        np.testing.assert_allclose([p.score for p in got], [p.score for p in want], atol=1e-6)
    correct = np.mean([p.concept == CONCEPTS[t] for p, t in zip(want, test_y, strict=True)])
    assert correct > 0.5  # a head that learned something, not two equally blank ones


def test_local_learning_goes_on_after_a_merge_and_merging_again_counts_nothing_twice():
    x, y, _ = _data(600, seed=1)
    a, b = _learner(), _learner()
    _teach(a, x[:200], y[:200])
    _teach(b, x[200:400], y[200:400])
    _fleet_merge([a, b])
    _teach(a, x[400:], y[400:])  # taught between rounds: into both its own and the merged statistics
    for _ in range(2):  # a repeated round
        _fleet_merge([a, b])
    assert own_statistics(a).n == 400 and own_statistics(b).n == 200
    single = _learner()
    _teach(single, np.concatenate([x[:200], x[400:], x[200:400]]), np.concatenate([y[:200], y[400:], y[200:400]]))
    for device in (a, b):
        stats = device.method.stats
        want = single.method.stats
        assert stats.n == 600
        rows = [device.known.index(c) for c in single.known]
        np.testing.assert_array_equal(stats.counts[rows], want.counts)
        np.testing.assert_allclose(stats.sums[rows], want.sums, rtol=1e-12)
        np.testing.assert_allclose(stats.within_scatter(), want.within_scatter(), rtol=1e-9, atol=1e-9)


def test_the_own_statistics_are_saved_and_resumed_apart():
    x, y, _ = _data(300, seed=2)
    a, b = _learner(), _learner()
    _teach(a, x[:150], y[:150])
    _teach(b, x[150:], y[150:])
    before = a.method.nbytes()
    _fleet_merge([a, b])
    # the memory plan counts the second set of statistics (and the concepts learned from b)
    assert a.method.nbytes() - before >= a.method.own.nbytes(a.method.stats.counts.size) > 0
    resumed = _learner()
    resumed.method.load_state_arrays(a.method.state_arrays())
    resumed.restore_known(a.known)
    assert own_statistics(resumed).n == 150 and resumed.method.stats.n == 300
    arrays = a.method.state_arrays()
    arrays["own.counts"] = arrays["own.counts"] + 1000  # more of its own than the head holds in all
    with pytest.raises(ValueError, match="own class statistics hold more samples"):
        _learner().method.load_state_arrays(arrays)


def test_a_gradient_head_has_no_statistics_to_share():
    sgd = Learner(HEAD, ANCHORS, LearnerConfig(method="sgd"))
    with pytest.raises(BadInputError, match="only the 'lda' head"):
        own_statistics(sgd)
    with pytest.raises(BadInputError, match="only the 'lda' head"):
        adopt_fleet(sgd, NamedStatistics.empty(F))
