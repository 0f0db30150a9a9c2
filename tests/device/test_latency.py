"""Arrival-to-answer latency: a live frame's age, and p50/p95 summed up in constant memory."""

from __future__ import annotations

import numpy as np
import pytest

from edgecvm.device.latency import AnswerLatency
from edgecvm.device.streams import Frame


def test_a_live_frame_ages_from_its_arrival_and_a_file_frame_has_no_age() -> None:
    assert Frame(None, "lemon", "photos/lemon/a.jpg").age_s(now=1000.0) is None
    assert Frame(None, None, "camera0#7", arrived=999.975).age_s(now=1000.0) == pytest.approx(0.025)
    assert Frame(None, None, "camera0#8", arrived=1000.5).age_s(now=1000.0) == 0.0  # a clock that went back


def test_percentiles_are_within_one_percent_above_the_exact_ones() -> None:
    latency = AnswerLatency()
    assert latency.summary() == {"frames": 0, "p50_ms": None, "p95_ms": None}
    seconds = np.random.default_rng(0).lognormal(np.log(0.02), 0.6, size=5000)
    for s in seconds:
        latency.add(float(s))
    summary = latency.summary()
    assert summary["frames"] == 5000
    for q in (50, 95):
        exact = float(np.percentile(seconds * 1000, q, method="inverted_cdf"))
        assert exact * 0.9999 <= summary[f"p{q}_ms"] <= exact * 1.01 + 0.01, (q, exact, summary)


def test_extremes_are_counted_at_the_ends_and_nonsense_is_refused() -> None:
    latency = AnswerLatency()
    latency.add(0.0)
    assert latency.summary()["p50_ms"] <= 0.1
    for _ in range(3):
        latency.add(1e9)  # a frame answered a month late: counted as the slowest bin, not an overflow
    assert latency.summary()["p95_ms"] == pytest.approx(100_000, rel=0.01)
    for bad in (float("nan"), float("inf"), -0.001):
        with pytest.raises(ValueError, match="latency must be a finite number of seconds >= 0"):
            latency.add(bad)
    assert latency.frames == 4
