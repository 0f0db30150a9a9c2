"""Stopping a Flower program with everything it started, by process id.

Why by id: the SuperLink and the SuperNode start ``flower-superexec`` in a
session of its own (and it starts ``flwr-serverapp`` / ``flwr-clientapp``),
so killing the program's process group leaves those running. The tree is read
from /proc (Linux, the only platform the devices run) *before* anything is
killed, while every child still has its parent.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def _parent_ids() -> dict[int, int]:
    """Every process id -> its parent's."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # gone meanwhile
                continue
            found[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return found


def tree(pid: int) -> list[int]:
    """``pid`` and every process below it, parents first."""
    children: dict[int, list[int]] = {}
    for child, parent in _parent_ids().items():
        children.setdefault(parent, []).append(child)
    found, queue = [], [pid]
    while queue:
        p = queue.pop(0)
        found.append(p)
        queue += children.get(p, [])
    return found


def stop_tree(pid: int, grace: float = 5.0) -> list[int]:
    """SIGTERM ``pid`` and its descendants, SIGKILL whatever is left after ``grace`` seconds; the ids signalled."""
    pids = tree(pid)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        running = [p for p in pids if alive(p)]
        for p in running:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while sig == signal.SIGTERM and any(alive(p) for p in running) and time.monotonic() < deadline:
            time.sleep(0.1)
    return pids


def alive(pid: int) -> bool:
    """Running (a zombie, finished and waiting for its parent to read its exit code, is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
