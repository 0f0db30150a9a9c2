"""The server's exchange with the nodes, on a fake grid and a fake clock: replies are taken as they arrive, never
more than a window of messages is out at once (the SuperLink holds each until pulled), and a node that never
answers is named once the round's timeout has passed while every other reply still counts."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

server_app = pytest.importorskip("edgecvm.fleet.server_app")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class FakeGrid:
    """Nodes answer one pull after they were sent a message, except the silent ones."""

    def __init__(self, silent: set[int]) -> None:
        self.silent, self.out, self.most_out, self.sent = silent, {}, 0, 0

    def push_messages(self, messages: list[SimpleNamespace]) -> list[str]:
        ids = []
        for m in messages:
            self.sent += 1
            ids.append(f"m{self.sent}")
            self.out[ids[-1]] = m.metadata.dst_node_id
        self.most_out = max(self.most_out, len(self.out))
        return ids

    def pull_messages(self, ids: list[str]) -> list[SimpleNamespace]:
        replies = [SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=i, src_node_id=self.out[i]))
                   for i in ids if self.out[i] not in self.silent]
        for r in replies:
            del self.out[r.metadata.reply_to_message_id]
        return replies


def test_replies_count_as_they_come_a_window_at_a_time_and_a_silent_node_is_named(monkeypatch: pytest.MonkeyPatch):
    clock = FakeClock()
    monkeypatch.setattr(server_app, "time", clock)
    grid = FakeGrid(silent={7})
    answered: list[int] = []

    def message_for(node: int) -> SimpleNamespace:
        return SimpleNamespace(metadata=SimpleNamespace(dst_node_id=node))

    silent = server_app._exchange(grid, list(range(40)), message_for, 60.0,
                                  lambda reply: answered.append(reply.metadata.src_node_id))
    assert silent == [7]
    assert sorted(answered) == [n for n in range(40) if n != 7]
    assert grid.sent == 40 and grid.most_out <= server_app._IN_FLIGHT
    assert clock.now >= 60.0  # it waited the whole timeout for node 7, and no longer than a poll beyond it
    assert clock.now < 60.0 + 2 * server_app._POLL
