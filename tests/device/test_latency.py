"""Arrival-to-answer latency: counted from each live frame's arrival, summed up in constant memory."""

from __future__ import annotations

import numpy as np
import pytest

from edgecvm.device.latency import AnswerLatency
from edgecvm.device.streams import Frame


def test_a_live_frame_is_timed_from_its_arrival_and_a_file_frame_not_at_all() -> None:
    now = [1000.0]
    latency = AnswerLatency(clock=lambda: now[0])
    assert latency.answered(Frame(None, "lemon", "photos/lemon/a.jpg")) is None
    assert latency.summary() == {"frames": 0, "p50_ms": None, "p95_ms": None}
    assert latency.answered(Frame(None, None, "camera0#7", arrived=now[0] - 0.025)) == pytest.approx(0.025)
    now[0] += 1.0  # answered a second later than the frame before: this one arrived 10 ms ago
    assert latency.answered(Frame(None, None, "camera0#8", arrived=now[0] - 0.010)) == pytest.approx(0.010)
    assert latency.frames == 2


def test_percentiles_are_within_one_percent_above_the_exact_ones() -> None:
    now = 50.0
    latency = AnswerLatency(clock=lambda: now)
    seconds = np.random.default_rng(0).lognormal(np.log(0.02), 0.6, size=5000)
    for s in seconds:
        latency.answered(Frame(None, None, "camera0", arrived=now - float(s)))
    summary = latency.summary()
    assert summary["frames"] == 5000
    for q in (50, 95):
        exact = float(np.percentile(seconds * 1000, q, method="inverted_cdf"))
        assert exact * 0.9999 <= summary[f"p{q}_ms"] <= exact * 1.01 + 0.01, (q, exact, summary)


def test_a_clock_that_went_back_counts_as_no_delay() -> None:
    latency = AnswerLatency(clock=lambda: 10.0)
    assert latency.answered(Frame(None, None, "camera0#1", arrived=10.5)) == 0.0
    assert latency.summary()["p95_ms"] is not None and latency.summary()["p95_ms"] <= 0.1
