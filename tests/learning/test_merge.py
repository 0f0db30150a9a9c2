"""Merging class statistics: the merge of devices' statistics is one learner's on all their samples."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from synthetic_data import Clusters

from edgecvm.errors import BadInputError
from edgecvm.learning.analytic_head import ClassStatistics
from edgecvm.learning.merge import NamedStatistics, check, from_class_statistics, merge, to_class_statistics

F = 24
NAMES = [f"concept {i}" for i in range(6)]


def _statistics(x: np.ndarray, y: np.ndarray) -> NamedStatistics:
    """What one device learns from (x, y): concepts numbered in the order it first saw them, as a learner does."""
    order = list(dict.fromkeys(y.tolist()))
    stats = ClassStatistics(F, np.float64)
    stats.add(x, np.array([order.index(label) for label in y]))
    return from_class_statistics(stats, [NAMES[label] for label in order])


def _by_name(named: NamedStatistics) -> dict[str, tuple[int, np.ndarray]]:
    return {c: (int(n), s) for c, n, s in zip(named.concepts, named.counts, named.sums, strict=True)}


def _data(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    y = np.random.default_rng(seed).integers(0, len(NAMES), n)
    return Clusters(len(NAMES), F, seed=seed).draw(y).astype(np.float64), y


@pytest.mark.parametrize("split", ["disjoint concepts", "every concept on every device", "uneven mix"])
def test_merged_statistics_are_one_learners_on_all_the_samples(split: str):
    x, y = _data()
    if split == "disjoint concepts":
        parts = [np.isin(y, group) for group in ([0, 1], [2, 3, 4], [5])]
    elif split == "every concept on every device":
        parts = [np.arange(y.size) % 3 == k for k in range(3)]
    else:  # device 0 has most of concept 0, device 2 nothing of concepts 4 and 5
        r = np.random.default_rng(1).random(y.size)
        parts = [(r < 0.6) & (y < 2) | (r < 0.2), (r >= 0.6) & (y < 2) | (r >= 0.2) & (r < 0.7) & (y >= 2)]
        parts.append(~(parts[0] | parts[1]) & (y < 4))
        keep = parts[0] | parts[1] | parts[2]
        x, y = x[keep], y[keep]
        parts = [p[keep] for p in parts]
    merged = NamedStatistics.empty(F)
    for part in parts:
        merged = merge(merged, _statistics(x[part], y[part]))
    single = _statistics(x, y)

    assert sorted(merged.concepts) == sorted(single.concepts)
    got, want = _by_name(merged), _by_name(single)
    for concept, (count, sums) in want.items():
        assert got[concept][0] == count
        np.testing.assert_allclose(got[concept][1], sums, rtol=1e-12)
    np.testing.assert_allclose(merged.scatter, single.scatter, rtol=1e-10, atol=1e-10 * np.abs(single.scatter).max())
    if split == "disjoint concepts":  # each concept's increments are exactly those of the single learner
        assert merged.fourth == pytest.approx(single.fourth, rel=1e-12)


def test_statistics_survive_the_learners_numbering_both_ways():
    x, y = _data(200)
    named = _statistics(x, y)
    known = [NAMES[i] for i in (5, 3, 1, 0, 2, 4)]  # a learner that knows them in another order
    back = from_class_statistics(to_class_statistics(named, known, np.dtype(np.float64)), known)
    assert _by_name(back).keys() == _by_name(named).keys()
    for concept, (count, sums) in _by_name(named).items():
        assert _by_name(back)[concept][0] == count
        np.testing.assert_allclose(_by_name(back)[concept][1], sums)
    np.testing.assert_allclose(back.scatter, named.scatter)
    assert back.fourth == named.fourth


def _corrupt(named: NamedStatistics, how: str) -> NamedStatistics:
    scatter, sums, counts = named.scatter.copy(), named.sums.copy(), named.counts.copy()
    if how == "nan":
        sums[0, 3] = np.nan
    elif how == "inf scatter":
        scatter[2, 2] = np.inf
    elif how == "negative count":
        counts[1] = -4
    elif how == "zero count":
        counts[1] = 0
    elif how == "float counts":
        return dataclasses.replace(named, counts=counts.astype(np.float64))
    elif how == "wrong feature size":
        return dataclasses.replace(named, sums=sums[:, :-1], scatter=scatter[:-1, :-1])
    elif how == "counts of another length":
        counts = counts[:-1]
    elif how == "asymmetric":
        scatter[0, 5] += 0.01 * np.abs(scatter).max()
    elif how == "negative variance":
        scatter[4, 4] = -scatter[4, 4]
    elif how == "not a covariance":
        scatter[0, 1] = scatter[1, 0] = 10 * np.sqrt(scatter[0, 0] * scatter[1, 1])
    elif how == "absurd mean":
        sums *= 1e12
    elif how == "absurd spread":
        scatter *= 1e30
    elif how == "negative fourth":
        return dataclasses.replace(named, fourth=-1.0)
    elif how == "repeated name":
        return dataclasses.replace(named, concepts=(named.concepts[0],) * len(named.concepts))
    return dataclasses.replace(named, scatter=scatter, sums=sums, counts=counts)


BAD = ["nan", "inf scatter", "negative count", "zero count", "float counts", "wrong feature size",
       "counts of another length", "asymmetric", "negative variance", "not a covariance", "absurd mean",
       "absurd spread", "negative fourth", "repeated name"]


@pytest.mark.parametrize("how", BAD)
def test_statistics_no_device_could_have_learned_are_refused_naming_their_source(how: str):
    named = _statistics(*_data(300))
    check(named, "node 7", F)  # the genuine ones pass
    with pytest.raises(BadInputError, match="^node 7: refused its class statistics: "):
        check(_corrupt(named, how), "node 7", F)
