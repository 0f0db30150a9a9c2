"""The open-set scenario and its figures on synthetic clusters; AUROC and FPR on hand-made scores; S/U/H."""

from __future__ import annotations

import math

import numpy as np
import pytest
from synthetic_data import CONCEPTS, Clusters, anchor_set, head_params

from edgecvm.device.profiles import load_profile
from edgecvm.errors import BadInputError
from edgecvm.eval import gzsl
from edgecvm.eval.feature_cache import FeatureTable
from edgecvm.eval.harness import HarnessConfig, MethodContext
from edgecvm.eval.open_set import auroc, build_open_set, fpr_at_tpr, run_open_set

F, D = 32, 16


def _table(per_class: int = 90, held_out: int = 40) -> FeatureTable:
    clusters = Clusters(len(CONCEPTS), F, seed=3)
    labels = np.repeat(np.arange(len(CONCEPTS)), per_class + held_out)
    is_train = np.tile(np.r_[np.ones(per_class, bool), np.zeros(held_out, bool)], len(CONCEPTS))
    return FeatureTable(clusters.draw(labels), labels, is_train, np.arange(labels.size), CONCEPTS)


def _context() -> MethodContext:
    profile = load_profile("host")
    return MethodContext(HarnessConfig(profile, backbone_bytes=1, input_size=224), head_params("linear", F, D, conse=True),
                         anchor_set(D), CONCEPTS, F)


def test_auroc_and_fpr_on_hand_made_scores():
    assert auroc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert auroc(np.array([1.0, 2.0]), np.array([3.0, 4.0])) == 0.0
    assert auroc(np.array([1.0, 3.0]), np.array([2.0, 2.0])) == 0.5
    assert auroc(np.array([2.0]), np.array([2.0])) == 0.5  # a tie counts half
    known = np.arange(21.0)  # accepting at least 95 % of them (20 of 21): the threshold is 1
    assert fpr_at_tpr(known, np.array([0.5, 1.0, 2.0, 3.0]), 0.95) == 0.75


def test_the_known_classes_are_taught_and_every_class_is_tested():
    table = _table()
    scenario, known = build_open_set(table, 0.5, 2, seed=0)
    assert known.size == 6 and len(scenario.tasks) == 2
    taught = np.concatenate([t.train.labels[t.train.order] for t in scenario.tasks])
    assert set(taught.tolist()) == set(known.tolist())
    assert set(scenario.test.labels.tolist()) == set(range(len(CONCEPTS)))
    with pytest.raises(BadInputError, match="--known-fraction"):
        build_open_set(table, 1.0, 2)
    with pytest.raises(BadInputError, match="--tasks"):
        build_open_set(table, 0.5, 7)


def test_every_method_reports_its_open_set_figures_and_the_device_holds_its_target_rate():
    scenario, known = build_open_set(_table(), 0.5, 2, seed=0)
    results = {r.name: r for r in run_open_set(scenario, known, ["cvm", "slda", "ncm", "softmax-replay"], _context())}
    for r in results.values():
        assert 0.0 <= r.auroc <= 1.0 and 0.0 <= r.open_set_accuracy <= 1.0 and 0.0 <= r.closed_set <= 1.0
    assert results["cvm"].threshold_source == "leave-one-out replay"
    assert results["cvm"].known_recall == pytest.approx(0.95, abs=0.05)
    assert results["cvm"].auroc > 0.8


def test_methods_without_an_open_set_calibration_are_refused():
    scenario, known = build_open_set(_table(), 0.5, 2, seed=0)
    with pytest.raises(BadInputError, match="cvm-noreplay"):
        run_open_set(scenario, known, ["cvm-noreplay"], _context())


def test_s_u_h_summary():
    assert gzsl.harmonic_mean(0.6, 0.3) == pytest.approx(0.4)
    assert gzsl.harmonic_mean(0.0, 0.0) == 0.0 and math.isnan(gzsl.harmonic_mean(0.5, math.nan))
    summary = gzsl.summary([{"S": 0.8, "U": 0.4, "H": 0.5}, {"S": 0.6, "U": math.nan, "H": math.nan}], [0.5])
    assert summary["mean_H"] == 0.5 and summary["mean_U"] == 0.4 and summary["min_U_over_before"] == 0.8
