"""Continual-learning metrics: arithmetic on hand-made accuracy matrices."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgecvm.eval.metrics import Accuracy, AccuracyMatrix, ResourceMeter

NAN = math.nan
# R[t, j]: accuracy on task j after training on tasks 0..t
HAND_MADE = [[0.9, NAN, NAN],
             [0.6, 0.8, NAN],
             [0.5, 0.7, 0.9]]


def _matrix(rows: list[list[float]]) -> AccuracyMatrix:
    matrix = AccuracyMatrix(len(rows))
    for t, row in enumerate(rows):
        for j, value in enumerate(row[: t + 1]):
            matrix.update(t, j, value)
    return matrix


def test_final_average_incremental_and_forgetting_of_a_hand_made_matrix():
    result = _matrix(HAND_MADE).result()
    assert result["accuracy_after_task"] == pytest.approx([0.9, 0.7, 0.7])
    assert result["final_average"] == pytest.approx((0.5 + 0.7 + 0.9) / 3)
    assert result["average_incremental"] == pytest.approx((0.9 + 0.7 + 0.7) / 3)
    # task 0 fell from its best 0.9 to 0.5, task 1 from 0.8 to 0.7; the last task cannot be forgotten yet
    assert result["forgetting"] == pytest.approx((0.4 + 0.1) / 2)
    assert result["matrix"][0] == [0.9, None, None]


def test_forgetting_uses_the_best_earlier_accuracy_not_the_first():
    result = _matrix([[0.5, NAN, NAN], [0.8, 0.6, NAN], [0.7, 0.6, 0.9]]).result()
    assert result["forgetting"] == pytest.approx(((0.8 - 0.7) + (0.6 - 0.6)) / 2)


def test_no_forgetting_and_learning_later_gives_negative_forgetting():
    result = _matrix([[0.4, NAN], [0.6, 0.8]]).result()
    assert result["forgetting"] == pytest.approx(-0.2)  # backward transfer: task 0 improved


def test_single_task_has_no_forgetting_and_missing_rows_are_nan():
    assert math.isnan(_matrix([[0.7]]).result()["forgetting"])
    matrix = AccuracyMatrix(3)
    matrix.update(2, 0, 0.5)
    matrix.update(2, 1, 0.6)
    matrix.update(2, 2, 0.7)  # joint training: only the last row is measured
    assert matrix.final_average() == pytest.approx(0.6)
    assert math.isnan(matrix.average_incremental()) and math.isnan(matrix.forgetting())
    matrix.reset()
    assert math.isnan(matrix.final_average())


def test_cells_outside_the_lower_triangle_are_refused():
    matrix = AccuracyMatrix(2)
    with pytest.raises(ValueError, match="outside the lower triangle"):
        matrix.update(0, 1, 0.5)
    with pytest.raises(ValueError):
        matrix.update(2, 0, 0.5)
    with pytest.raises(ValueError):
        AccuracyMatrix(0)


def test_accuracy_accumulates_over_updates_and_resets():
    accuracy = Accuracy()
    assert math.isnan(accuracy.result())
    accuracy.update(np.array([1, 2, 3]), np.array([1, 2, 0]))
    accuracy.update(np.array([4]), np.array([4]))
    assert accuracy.result() == pytest.approx(3 / 4)
    with pytest.raises(ValueError):
        accuracy.update(np.array([1, 2]), np.array([1]))
    accuracy.reset()
    assert math.isnan(accuracy.result())


def test_resource_meter_counts_allocations_inside_spans_only():
    meter = ResourceMeter()
    outside = np.ones(4_000_000)  # noqa: F841  (32 MB allocated before measuring: not the method's)
    meter.start()
    kept = np.ones(1_000_000)  # 8 MB (10^6 bytes) held across spans, like a method's state
    meter.stop()
    scratch = np.ones(8_000_000)  # 64 MB between spans (evaluation): not counted
    del scratch
    meter.start()
    temporary = np.ones(2_000_000)  # 16 MB on top of the 8 MB kept
    del temporary
    meter.stop()
    usage = meter.result()
    # 24,000,000 bytes of array data (22.9 MiB) plus array headers; the 32 MB before and 64 MB between are not in it
    assert 24_000_000 <= usage.peak_bytes < 24_100_000
    assert usage.seconds > 0
    assert kept.size
    with pytest.raises(RuntimeError):
        meter.stop()
