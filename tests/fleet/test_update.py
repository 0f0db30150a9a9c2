"""What a device sends a fleet server, and the server's running sum: compact updates decode to the statistics sent
(float32 to rounding, float16 to its precision), anything malformed or forged is refused naming its source, and
the sum of the accepted updates is the exact merge (no flwr needed)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from synthetic_data import CONCEPTS, Clusters

from edgecvm.errors import BadInputError
from edgecvm.fleet.total import FleetTotal
from edgecvm.fleet.update import Identity, Update, decode, digest, encode
from edgecvm.learning.analytic_head import ClassStatistics
from edgecvm.learning.merge import NamedStatistics, from_class_statistics, merge

F = 24
IDENTITY = Identity("b" * 64, "a" * 64, F)


def _statistics(concepts: list[int], seed: int) -> NamedStatistics:
    clusters = Clusters(8, F, spread=1.2, seed=seed)
    labels = np.repeat(np.arange(len(concepts)), 10)
    stats = ClassStatistics(F, np.float64)
    stats.add(clusters.draw(np.array(concepts)[labels]), labels)
    return from_class_statistics(stats, [CONCEPTS[c] for c in concepts])


def _close(got: NamedStatistics, want: NamedStatistics, rtol: float) -> None:
    assert got.concepts == want.concepts
    np.testing.assert_array_equal(got.counts, want.counts)
    np.testing.assert_allclose(got.sums, want.sums, rtol=rtol, atol=rtol * np.abs(want.sums).max())
    np.testing.assert_allclose(got.scatter, want.scatter, rtol=0, atol=rtol * np.abs(want.scatter).max())


@pytest.mark.parametrize(("dtype", "rtol", "itemsize"), [("float32", 1e-6, 4), ("float16", 2e-3, 2)])
def test_an_update_arrives_as_sent_in_half_the_bytes(dtype: str, rtol: float, itemsize: int):
    stats = _statistics([0, 1, 2], seed=0)
    arrays, config = encode(Update(IDENTITY, stats), dtype)
    assert arrays["covariance"].nbytes == F * (F + 1) // 2 * itemsize  # the upper triangle only
    got = decode(arrays, config, "node 7")
    assert got.identity == IDENTITY
    _close(got.statistics, stats, rtol)
    np.testing.assert_array_equal(got.statistics.scatter, got.statistics.scatter.T)


def test_a_malformed_update_is_refused_naming_its_source():
    arrays, config = encode(Update(IDENTITY, _statistics([0, 1], seed=0)))
    cases = [({**arrays, "means": arrays["means"][:, :-1]}, config, "shapes"),
             ({k: v for k, v in arrays.items() if k != "covariance"}, config, "covariance"),
             (arrays, {k: v for k, v in config.items() if k != "bundle-sha256"}, "bundle-sha256"),
             (arrays, {**config, "feature-dim": "24"}, "identity"),
             (arrays, {**config, "concepts": ["x"]}, "shapes")]
    for bad_arrays, bad_config, why in cases:
        with pytest.raises(BadInputError, match=f"node 7: .*{why}"):
            decode(bad_arrays, bad_config, "node 7")


def test_the_total_is_the_exact_merge_and_refuses_what_does_not_fit(caplog: pytest.LogCaptureFixture):
    a, b, c = _statistics([0, 1], 0), _statistics([1, 2], 1), _statistics([3], 2)
    total = FleetTotal(IDENTITY)
    forged = encode(Update(IDENTITY, NamedStatistics(c.concepts, c.counts, c.sums * 1e12, c.scatter, c.fourth)))
    other_bundle = encode(Update(Identity("c" * 64, "a" * 64, F), c))
    nan = encode(Update(IDENTITY, NamedStatistics(c.concepts, c.counts, c.sums * np.nan, c.scatter, c.fourth)))
    for source, (arrays, config) in [("node 1", encode(Update(IDENTITY, a))), ("node 2", forged),
                                     ("node 3", other_bundle), ("node 4", nan), ("node 5", encode(Update(IDENTITY, b))),
                                     ("node 1", encode(Update(IDENTITY, c)))]:
        total.add(arrays, config, source)
    assert list(total.accepted) == ["node 1", "node 5"]
    assert set(total.refused) == {"node 2", "node 3", "node 4", "node 1"}
    assert "absurdly large" in total.refused["node 2"] and "another bundle" in total.refused["node 3"]
    assert "NaN" in total.refused["node 4"] and "second update" in total.refused["node 1"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [w.split(":")[0] for w in warnings] == ["node 2", "node 3", "node 4", "node 1"]  # a log line naming each
    _close(total.statistics, merge(a, b), 1e-6)
    assert total.accepted["node 1"] == digest(*encode(Update(IDENTITY, a)))


def test_the_first_update_sets_the_identity_when_the_server_was_told_none():
    total = FleetTotal()
    assert total.add(*encode(Update(IDENTITY, _statistics([0], 0))), "node 1")
    assert not total.add(*encode(Update(Identity("c" * 64, "a" * 64, F), _statistics([1], 1))), "node 2")
    assert total.identity == IDENTITY
