"""The few-shot curve on synthetic clusters: one point per K that fits, the K that do not are named, and its table."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from synthetic_data import Clusters, anchor_set, head_params

from edgecvm.device.profiles import load_profile
from edgecvm.errors import BadInputError
from edgecvm.eval.feature_cache import FeatureTable
from edgecvm.eval.few_shot_curve import feasible_shots, run_curve
from edgecvm.eval.harness import HarnessConfig, MethodContext
from edgecvm.eval.report import curve_table

CONCEPTS = ("cat", "dog", "coffee mug", "sock")


def table(train_per_class: list[int], test_per_class: int = 20, seed: int = 0) -> FeatureTable:
    labels = np.concatenate([np.repeat(np.arange(len(train_per_class)), train_per_class),
                             np.repeat(np.arange(len(train_per_class)), test_per_class)])
    is_train = np.arange(labels.size) < sum(train_per_class)
    features = Clusters(len(train_per_class), feature_dim=32, spread=1.5, seed=seed).draw(labels)
    return FeatureTable(features, labels, is_train, np.full(labels.size, -1), CONCEPTS[: len(train_per_class)])


def test_k_larger_than_the_smallest_class_is_left_out_naming_it(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.WARNING)
    assert feasible_shots(table([30, 7, 30, 30]), (1, 2, 5, 10, 20)) == [1, 2, 5]
    assert "K = 10, 20 left out" in caplog.text and "class 'dog' has 7 training image(s)" in caplog.text
    with pytest.raises(BadInputError, match="no K of the few-shot curve fits.*'dog' has 7"):
        feasible_shots(table([30, 7, 30, 30]), (10, 20))


def test_the_curve_has_a_point_per_k_and_more_examples_help():
    data = table([40, 40, 40, 40])
    ctx = MethodContext(HarnessConfig(profile=load_profile("host"), backbone_bytes=0, input_size=224),
                        head_params(feature_dim=32, conse=True), anchor_set(names=CONCEPTS), CONCEPTS, 32)
    points = run_curve(data, (20, 1, 5), ["cvm", "ncm"], ctx, n_tasks=2)
    assert [p.shots for p in points] == [1, 5, 20]
    final = {(p.shots, r.name): r.metrics["final_average"] for p in points for r in p.results}
    for method in ("cvm", "ncm"):
        assert final[(20, method)] > final[(1, method)]
        assert final[(20, method)] > 0.6  # four classes: chance is 0.25
    text = curve_table(points)
    assert text.splitlines()[0] == "| method | K = 1 | K = 5 | K = 20 |"
    assert f"| ncm | {100 * final[(1, 'ncm')]:.1f} |" in text
