"""Memory plan: the table, the budget check (exit 3), live RSS sampling and shrinking replay under pressure."""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys

import numpy as np
import pytest
from synthetic_data import anchor_set, head_params

from edgecvm.device import memory_plan
from edgecvm.device.memory_plan import (
    MB,
    RssMonitor,
    current_rss_bytes,
    plan_for_learner,
    plan_memory,
    replay_shrinker,
)
from edgecvm.device.profiles import load_profile
from edgecvm.errors import BudgetExceededError
from edgecvm.learning.learner import Learner, LearnerConfig
from edgecvm.learning.replay import ReplayBuffer

HOST = load_profile("host")


def _plan(profile=HOST, **overrides):
    args = dict(model_bytes=13 * MB, input_size=224, head_bytes=16 * MB, anchors_bytes=MB, replay_bytes=5 * MB)
    return plan_memory(profile, **{**args, **overrides})


def test_plan_adds_up_its_items_and_shows_them_in_a_table():
    plan = _plan()
    assert plan.total_bytes == sum(item.nbytes for item in plan.items)
    names = [item.name for item in plan.items]
    assert {"runtime baseline", "backbone session", "replay buffer", "head", "checkpoint"} <= set(names)
    table = plan.table(HOST.memory_budget_mb)
    for name in names + ["total", "budget"]:
        assert name in table
    assert f"{plan.total_bytes / MB:.1f}" in table
    assert plan.as_dict()["total_mb"] == pytest.approx(plan.total_bytes / MB, abs=0.01)


def test_predicting_plans_no_replay_or_checkpoint():
    names = {item.name for item in _plan(learning=False).items}
    assert "replay buffer" not in names and "checkpoint" not in names


def test_estimates_follow_the_profile_and_the_input_size():
    basic = dataclasses.replace(HOST, graph_optimization="basic")
    session = {p.graph_optimization: next(i for i in _plan(p).items if i.name == "backbone session").nbytes
               for p in (HOST, basic)}
    assert session["all"] > session["basic"]  # optimised graphs hold re-laid-out weight copies
    act = {s: next(i for i in _plan(input_size=s).items if i.name == "backbone activations").nbytes for s in (160, 224)}
    assert act[160] < act[224]


def test_frame_buffers_follow_the_frame_size():
    frames = {size: next(i for i in _plan(frame_size=size).items if i.name == "frame buffers").nbytes
              for size in ((640, 480), (1280, 720))}
    assert frames[(1280, 720)] - frames[(640, 480)] == 3 * 3 * (1280 * 720 - 640 * 480)  # three RGB frames in flight
    assert _plan(frame_size=(1280, 720)).total_bytes > _plan().total_bytes


def test_trimmed_heap_plans_smaller_sessions_and_arena_free_activations():
    no_arena = dataclasses.replace(HOST, ort_cpu_arena=False)
    plain = {i.name: i.nbytes for i in _plan(no_arena).items}
    trimmed = {i.name: i.nbytes for i in _plan(no_arena, heap_trimmed=True).items}
    assert trimmed["backbone session"] < plain["backbone session"]
    assert trimmed["backbone activations"] < plain["backbone activations"]


def test_plan_over_budget_refuses_with_exit_code_3_and_the_table():
    tight = dataclasses.replace(HOST, memory_budget_mb=100)
    plan = _plan(replay_bytes=80 * MB)
    with pytest.raises(BudgetExceededError) as info:
        plan.check(tight)
    assert info.value.exit_code == 3
    message = str(info.value)
    assert "exceeds the 100 MB budget" in message and "replay buffer" in message and "total" in message
    _plan().check(HOST)  # the host profile's 400 MB fits


def test_plan_for_learner_counts_what_the_learner_holds():
    # the gradient head caches the ConSE part of every replay slot, so its plan grows with the buffer
    learner = Learner(head_params("linear", 32, 16, conse=True), anchor_set(16),
                      LearnerConfig(method="sgd", replay_bytes=64_000))
    plan = {i.name: i.nbytes for i in plan_for_learner(HOST, 1000, 224, learner).items}
    assert plan["replay buffer"] == learner.replay.nbytes
    assert plan["head"] == learner.method.nbytes(learner.replay.capacity) > learner.method.nbytes()
    assert plan["anchors"] == learner.anchors.resident_bytes > learner.anchors.vectors.nbytes
    assert plan["backbone session"] == int(1000 * memory_plan.SESSION_FACTOR["all"])


_TOUCH_AND_SHRINK = """
from edgecvm.device.memory_plan import MB, current_rss_bytes
from edgecvm.learning.replay import ReplayBuffer
before = current_rss_bytes()
buffer = ReplayBuffer.from_bytes(40 * MB, 1280)
buffer.features[:] = 1.0  # touch every page
grown = current_rss_bytes()
buffer.shrink(0)
print(before, grown, current_rss_bytes())
"""


def test_current_rss_sees_memory_being_touched_and_given_back():
    if current_rss_bytes() is None:
        pytest.skip("no /proc on this OS")
    # A process of its own: threads this test process still runs (servers of other modules) move its RSS too.
    out = subprocess.run([sys.executable, "-c", _TOUCH_AND_SHRINK], capture_output=True, text=True, check=True)
    before, grown, shrunk = (int(v) for v in out.stdout.split())
    assert grown - before > 30 * MB
    assert grown - shrunk > 30 * MB  # shrinking really returns the memory to the OS


def test_monitor_samples_every_n_ticks_and_calls_back_over_budget(monkeypatch):
    readings = iter([50 * MB, 120 * MB, 90 * MB])
    monkeypatch.setattr(memory_plan, "current_rss_bytes", lambda: next(readings, 90 * MB))
    events = []
    monitor = RssMonitor(100 * MB, lambda rss, budget: events.append((rss, budget)), every=3)
    samples = [monitor.tick() for _ in range(9)]
    assert samples == [None, None, 120 * MB, None, None, 90 * MB, None, None, 90 * MB]
    assert events == [(120 * MB, 100 * MB)] and monitor.peak_bytes == 120 * MB and monitor.over_budget_events == 1


def test_monitor_can_judge_anonymous_memory_plus_a_file_backed_allowance(monkeypatch):
    # Page-cache pages counted in RSS do not trigger shedding; memory the process allocated does.
    monkeypatch.setattr(memory_plan, "current_rss_bytes", lambda: 150 * MB)
    readings = iter([60 * MB, 70 * MB, 80 * MB])  # the first is read at construction (is there a /proc?)
    monkeypatch.setattr(memory_plan, "anonymous_rss_bytes", lambda: next(readings))
    events = []
    monitor = RssMonitor(100 * MB, lambda rss, budget: events.append((rss, budget)), every=1,
                         file_backed_bytes=24 * MB)
    assert [monitor.tick(), monitor.tick()] == [94 * MB, 104 * MB]
    assert events == [(104 * MB, 100 * MB)]


def test_anonymous_rss_is_part_of_the_rss() -> None:
    if memory_plan.current_rss_bytes() is None:
        pytest.skip("no /proc on this OS")
    anonymous, parts = memory_plan.anonymous_rss_bytes(), memory_plan.rss_parts()
    assert 0 < anonymous < memory_plan.current_rss_bytes()
    assert parts is not None and parts["anon"] + parts["file"] + parts["shmem"] == pytest.approx(parts["rss"], abs=0.3)


def test_monitor_without_proc_warns_once_and_does_nothing(monkeypatch, caplog):
    monkeypatch.setattr(memory_plan, "current_rss_bytes", lambda: None)
    with caplog.at_level(logging.WARNING, logger="edgecvm.device.memory_plan"):
        monitor = RssMonitor(MB, lambda rss, budget: pytest.fail("no callback without a reading"), every=1)
    assert not monitor.available and "cannot read" in caplog.text
    assert [monitor.tick() for _ in range(3)] == [None, None, None]


def test_replay_shrinker_gives_back_the_excess(caplog):
    buffer = ReplayBuffer(100, 32)
    for i in range(100):
        buffer.add(np.full((1, 32), i, np.float32), np.array([i % 4]))
    shrink = replay_shrinker(buffer)
    before = buffer.nbytes
    with caplog.at_level(logging.WARNING, logger="edgecvm.device.memory_plan"):
        shrink(rss=200 * MB + 3000, budget=200 * MB)
    assert before - 3000 - buffer.bytes_per_sample < buffer.nbytes <= before - 3000  # whole samples given back
    assert buffer.size == buffer.capacity and np.bincount(buffer.labels[: buffer.size]).max() <= buffer.capacity // 4 + 1
    assert "replay buffer shrunk" in caplog.text
