"""A fleet round in Flower's Simulation Engine on real features: six devices' state dirs, one forged, one failing.

Tiny-ImageNet features (`make eval`'s cache, else a 20-class slice extracted for the session: tests/eval_features.py)
of 20 classes, up to 100 training images each, dealt at random over four honest devices (skipped without the zip or
without flwr[simulation]). After one round every honest device's state
holds one learner's statistics on all their images (float32 rounding) and answers as that learner within 0.1
point (the discriminant alone: the ConSE blend is fitted on each device's own replay buffer); the forged update
is refused by the server, naming its node, a node whose ClientApp fails mid-round is left out, and the round
completes with the others.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from edgecvm.eval.feature_cache import FeatureTable

pytest.importorskip("flwr")
pytest.importorskip("ray")

from edgecvm.device.state import StateIdentity, load_state, save_state  # noqa: E402
from edgecvm.fleet.launch import offline_env  # noqa: E402
from edgecvm.fleet.processes import stop_tree  # noqa: E402
from edgecvm.formats.bundle import load_bundle, load_head_and_anchors  # noqa: E402
from edgecvm.learning.analytic_head import AnalyticHead  # noqa: E402
from edgecvm.learning.fleet import adopt_total, own_statistics  # noqa: E402
from edgecvm.learning.learner import Learner, LearnerConfig  # noqa: E402
from edgecvm.learning.merge import from_class_statistics  # noqa: E402

pytestmark = [pytest.mark.data, pytest.mark.slow]
CLASSES, TRAIN, HONEST, FORGED, FAILING = 20, 100, 4, 4, 5  # devices 4 and 5 come after the honest ones
SIMULATE = Path(__file__).resolve().parent / "simulate.py"


def _discriminant(bundle: Path, learner: Learner) -> Learner:
    """A learner solved from ``learner``'s statistics without the ConSE blend (what the merge guarantees)."""
    head, anchors = load_head_and_anchors(load_bundle(str(bundle)))
    alone = Learner(head, anchors, method=AnalyticHead("lda", head, use_conse=False))
    adopt_total(alone, from_class_statistics(learner.method.stats, learner.known))
    return alone


def test_one_round_teaches_every_device_what_the_fleet_was_taught(real_features: tuple[Path, FeatureTable],
                                                                   tmp_path: Path):
    bundle, table = real_features
    head, anchors = load_head_and_anchors(load_bundle(str(bundle)))
    identity = StateIdentity.of_bundle(load_bundle(str(bundle)))
    rng = np.random.default_rng(0)
    classes = np.arange(0, len(table.concepts), len(table.concepts) // CLASSES)[:CLASSES]
    chosen = np.isin(table.labels, classes)
    train = rng.permutation(np.flatnonzero(chosen & table.is_train & (table.numbers < TRAIN)))
    val = np.flatnonzero(chosen & ~table.is_train)

    def names(rows: np.ndarray) -> list[str]:
        return [table.concepts[y] for y in table.labels[rows]]

    parts = np.array_split(train, HONEST)
    for i, part in enumerate([*parts, parts[0][:50], parts[1][:50]]):  # the last two: a little of devices 0, 1
        device = Learner(head, anchors, LearnerConfig(method="lda"))
        device.observe_features(table.features[part], names(part))
        save_state(tmp_path / f"device-{i}", device, identity)
    single = Learner(head, anchors, method=AnalyticHead("lda", head, use_conse=False))
    single.observe_features(table.features[train], names(train))

    result = tmp_path / "result.json"
    with tempfile.TemporaryDirectory(prefix="r", dir="/tmp") as ray_tmp:  # Ray's socket path: short
        proc = subprocess.Popen([sys.executable, str(SIMULATE), "--states", str(tmp_path), "--bundle", str(bundle),
                                 "--nodes", str(HONEST + 2), "--forge", str(FORGED), "--crash", str(FAILING),
                                 "--result", str(result)],
                                env=offline_env(os.environ, ray_tmpdir=ray_tmp), start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = proc.communicate(timeout=300)
        finally:
            stop_tree(proc.pid)
    assert result.exists(), err[-3000:]
    (round_,) = json.loads(result.read_text())
    assert len(round_["accepted"]) == HONEST and len(round_["adopted"]) == HONEST
    ((node, why),) = round_["refused"].items()
    assert node.startswith("node ") and node in why and "absurdly large" in why
    assert round_["samples"] == train.size and round_["concepts"] == CLASSES
    assert len(round_["dropped"]) == 1 and not round_["declined"]

    truth = names(val)
    want = single.method.stats
    single_accuracy = np.mean([p.concept == t for p, t in zip(single.predict_features(table.features[val]), truth,
                                                               strict=True)])
    for i in range(HONEST):
        device = load_state(tmp_path / f"device-{i}", head, anchors, identity)
        assert own_statistics(device).n == parts[i].size  # what it was taught itself, kept apart
        got = device.method.stats
        rows = [device.known.index(c) for c in single.known]
        np.testing.assert_array_equal(got.counts[rows], want.counts)
        np.testing.assert_allclose(got.sums[rows], want.sums, rtol=1e-5, atol=1e-5 * np.abs(want.sums).max())
        scatter = want.within_scatter()
        np.testing.assert_allclose(got.within_scatter(), scatter, rtol=0, atol=1e-5 * np.abs(scatter).max())
        accuracy = np.mean([p.concept == t for p, t in zip(
            _discriminant(bundle, device).predict_features(table.features[val]), truth, strict=True)])
        assert abs(accuracy - single_accuracy) <= 0.001, (i, accuracy, single_accuracy)
    assert single_accuracy > 0.5
    for i in (FORGED, FAILING):  # left out of the round: their states as they were
        assert load_state(tmp_path / f"device-{i}", head, anchors, identity).method.stats.n == 50
