"""A device's side of fleet rounds on its state dir (no flwr needed): it takes in what the others were taught, keeps
its own statistics apart so repeated rounds never count a sample twice, and refuses a total that does not hold what
it has now, its state untouched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from synthetic_data import Clusters

from edgecvm.device.state import StateIdentity, load_state, save_state, state_path
from edgecvm.errors import BadInputError
from edgecvm.fleet.node import DeviceNode
from edgecvm.fleet.total import FleetTotal
from edgecvm.fleet.update import Identity, Update, decode, encode
from edgecvm.formats.bundle import load_bundle, load_head_and_anchors
from edgecvm.learning.fleet import own_statistics
from edgecvm.learning.learner import Learner, LearnerConfig


@pytest.fixture
def devices(tmp_path: Path, test_bundle: Path) -> dict:
    head, anchors = load_head_and_anchors(load_bundle(str(test_bundle)))
    names = list(anchors.names[:4])
    clusters = Clusters(4, head.feature_dim, seed=0)
    identity = StateIdentity.of_bundle(load_bundle(str(test_bundle)))
    for device, concepts in {"a": [0, 1], "b": [1, 2]}.items():
        learner = Learner(head, anchors, LearnerConfig(method="lda"))
        labels = np.repeat(concepts, 10)
        learner.observe_features(clusters.draw(labels), [names[i] for i in labels])
        save_state(tmp_path / device, learner, identity)
    return {"root": tmp_path, "head": head, "anchors": anchors, "identity": identity, "names": names,
            "clusters": clusters, "nodes": {d: DeviceNode(tmp_path / d, test_bundle) for d in "ab"}}


def _round(nodes: dict[str, DeviceNode], dtype: str = "float32") -> None:
    """What the server and the nodes do in one round (server_app.py without Flower)."""
    total = FleetTotal()
    for name, node in nodes.items():
        assert total.add(*node.share(dtype), name)
    arrays, config = encode(Update(total.identity, total.statistics))
    for name, node in nodes.items():
        node.adopt(arrays, config, total.accepted[name], dtype)


def _load(devices: dict, name: str) -> Learner:
    return load_state(devices["root"] / name, devices["head"], devices["anchors"], devices["identity"])


def test_rounds_teach_every_device_and_never_count_twice(devices: dict):
    _round(devices["nodes"])
    a = _load(devices, "a")
    assert set(a.known) == set(devices["names"][:3]) and a.method.stats.n == 40 and own_statistics(a).n == 20
    _round(devices["nodes"])  # the same statistics again: nothing new
    assert _load(devices, "a").method.stats.n == 40
    b = _load(devices, "b")  # b learns a little more locally, then a round brings it to a
    b.observe_features(devices["clusters"].draw(np.array([3] * 5)), [devices["names"][3]] * 5)
    assert b.method.stats.n == 45 and own_statistics(b).n == 25
    save_state(devices["root"] / "b", b, devices["identity"])
    _round(devices["nodes"])
    a = _load(devices, "a")
    assert a.method.stats.n == 45 and own_statistics(a).n == 20 and devices["names"][3] in a.known


def test_a_float16_round_gives_the_float32_rounds_statistics_to_its_precision(devices: dict):
    _round(devices["nodes"], "float16")
    half = _load(devices, "a").method.stats
    _round(devices["nodes"])
    full = _load(devices, "a").method.stats
    np.testing.assert_array_equal(half.counts, full.counts)
    np.testing.assert_allclose(half.sums, full.sums, rtol=0, atol=2e-3 * np.abs(full.sums).max())
    scatter = full.within_scatter()
    np.testing.assert_allclose(half.within_scatter(), scatter, rtol=0, atol=2e-3 * np.abs(scatter).max())


def test_a_total_that_does_not_hold_the_state_as_it_is_now_is_refused(devices: dict, test_bundle: Path):
    node = devices["nodes"]["a"]
    total = FleetTotal()
    total.add(*node.share(), "a")
    total.add(*devices["nodes"]["b"].share(), "b")
    arrays, config = encode(Update(total.identity, total.statistics))
    before = state_path(devices["root"] / "a").read_bytes()
    with pytest.raises(BadInputError, match="changed since it was shared"):
        node.adopt(arrays, config, total.accepted["b"])  # another device's update: not what a holds
    other = encode(Update(Identity("c" * 64, node.identity.anchors_sha256, node.identity.feature_dim),
                          decode(arrays, config, "t").statistics))
    with pytest.raises(BadInputError, match="another bundle"):
        node.adopt(*other, total.accepted["a"])
    assert state_path(devices["root"] / "a").read_bytes() == before


def test_only_the_lda_head_shares(devices: dict, test_bundle: Path):
    head, anchors = devices["head"], devices["anchors"]
    learner = Learner(head, anchors, LearnerConfig(method="sgd"))
    learner.observe_features(devices["clusters"].draw(np.array([0] * 4)), [devices["names"][0]] * 4)
    save_state(devices["root"] / "sgd", learner, devices["identity"])
    with pytest.raises(BadInputError, match="sgd.*only the 'lda' head"):
        DeviceNode(devices["root"] / "sgd", test_bundle).share()
