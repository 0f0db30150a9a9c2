"""The fleet's Flower ServerApp: one round asks every node for its own statistics, sums them as they arrive, and
sends the total back for each node to solve its head from.

Why a loop of its own and not a Strategy: Flower's FedAvg takes a weighted
*mean* of the updates, which is wrong for statistics, and its strategies
collect every reply before aggregating. Here each reply is decoded, checked
and added to the running total (total.py) as soon as it is pulled, then
dropped: the server's memory does not grow with the number of devices. A
refused update is a log line naming its node, a node that does not answer
within the round's timeout is left out, and the round completes with the
others. A run in which some round added nothing fails (an exception here is
what marks a Flower run failed).

Each round's result goes to the app's ``report`` as soon as the round ends;
the app Flower starts for ``edgecvm fleet round`` (cli/fleet_server_app.py)
prints it as a line of its output, which ``flwr run --stream`` relays.

Imported only by Flower (``flwr run``, ``flower-superexec``, the simulation):
the rest of edgecvm runs without flwr.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from edgecvm.errors import BadInputError
from edgecvm.fleet.total import FleetTotal
from edgecvm.fleet.update import DTYPES, Identity, Update, encode, upload_bytes

log = logging.getLogger(__name__)

SHARE, ADOPT = "train", "train.adopt"  # message types: a node's own statistics up, the fleet total down
_POLL = 0.5  # seconds between pulls of the replies that arrived
_IN_FLIGHT = 16  # messages out at a time (_exchange)


@dataclass(frozen=True)
class RoundSettings:
    """The run config of a fleet run (``flwr run --run-config``, keys with dashes)."""

    rounds: int = 1
    min_nodes: int = 2  # the first round waits for this many connected nodes
    wait: float = 120.0  # seconds to wait for them
    timeout: float = 300.0  # seconds a round waits for replies
    dtype: str = "float32"  # what nodes send their statistics in (update.py)
    bundle_sha256: str = ""  # the fleet's bundle, anchor file and feature size ("": the first valid update's)
    anchors_sha256: str = ""
    feature_dim: int = 0

    @property
    def identity(self) -> Identity | None:
        return Identity(self.bundle_sha256, self.anchors_sha256, self.feature_dim) if self.bundle_sha256 else None

    @classmethod
    def from_run_config(cls, config: dict[str, object]) -> RoundSettings:
        fields = {k.replace("-", "_"): v for k, v in config.items() if k.replace("-", "_") in cls.__dataclass_fields__}
        settings = cls(**fields)
        if settings.dtype not in DTYPES or settings.rounds < 1 or settings.min_nodes < 1:
            raise BadInputError(f"run config: dtype one of {', '.join(DTYPES)}, rounds and min-nodes >= 1")
        return settings


@dataclass
class RoundResult:
    round: int
    nodes: int  # asked
    accepted: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)  # no answer in time, or an error from Flower
    adopted: list[str] = field(default_factory=list)
    declined: dict[str, str] = field(default_factory=dict)  # accepted, but did not adopt the total (why)
    samples: int = 0
    concepts: int = 0
    upload_bytes: int = 0  # the largest update received
    seconds: float = 0.0


def _node(message: Message) -> str:
    return f"node {message.metadata.src_node_id}"


def _exchange(grid: Grid, nodes: list[int], message_for: Callable[[int], Message], timeout: float,
              take: Callable[[Message], None]) -> list[int]:
    """Send each node its message and hand each reply to ``take`` as it arrives; the nodes that did not answer
    within ``timeout``. At most ``_IN_FLIGHT`` messages are out at a time: the SuperLink holds every message and
    reply until it is pulled, and a fleet total sent to every node at once would take memory in proportion to
    the fleet."""
    queue, pending = list(nodes), {}
    deadline = time.monotonic() + timeout
    while (queue or pending) and time.monotonic() < deadline:
        wave = [message_for(node) for node in queue[: _IN_FLIGHT - len(pending)]]
        del queue[: len(wave)]
        if wave:
            pending.update(zip(grid.push_messages(wave), (m.metadata.dst_node_id for m in wave), strict=True))
        for reply in grid.pull_messages(list(pending)):
            pending.pop(reply.metadata.reply_to_message_id, None)
            take(reply)
        if pending:
            time.sleep(_POLL)
    return sorted([*pending.values(), *queue])


def _wait_for_nodes(grid: Grid, settings: RoundSettings) -> None:
    deadline = time.monotonic() + settings.wait
    while len(list(grid.get_node_ids())) < settings.min_nodes and time.monotonic() < deadline:
        time.sleep(_POLL)
    connected = len(list(grid.get_node_ids()))
    if connected < settings.min_nodes:
        log.warning("%d of the %d nodes asked for are connected after %.0f s; going on with them",
                    connected, settings.min_nodes, settings.wait)


def run_round(grid: Grid, settings: RoundSettings, number: int) -> RoundResult:
    start = time.monotonic()
    nodes = sorted(grid.get_node_ids())
    result = RoundResult(number, len(nodes))
    total = FleetTotal(settings.identity)

    def take_update(reply: Message) -> None:
        node = _node(reply)
        if reply.has_error():
            result.dropped.append(node)
            log.warning("%s: no update (%s)", node, reply.error.reason)
            return
        meta = dict(reply.content.config_records.get("meta", {}))
        if "error" in meta:
            total.refused[node] = str(meta["error"])
            log.warning("%s: no update: %s", node, meta["error"])
            return
        arrays = {k: a.numpy() for k, a in reply.content.array_records.get("update", ArrayRecord()).items()}
        if total.add(arrays, meta, node):
            result.upload_bytes = max(result.upload_bytes, upload_bytes(arrays))

    config = ConfigRecord({"round": number, "dtype": settings.dtype})

    def ask(node: int) -> Message:
        return Message(RecordDict({"config": config}), dst_node_id=node, message_type=SHARE)

    result.dropped += [f"node {n}" for n in _exchange(grid, nodes, ask, settings.timeout, take_update)]
    result.accepted, result.refused = list(total.accepted), dict(total.refused)
    if total.statistics is None or total.identity is None:
        result.seconds = time.monotonic() - start
        return result
    result.samples, result.concepts = total.statistics.n, len(total.statistics.concepts)
    arrays, meta = encode(Update(total.identity, total.statistics), "float32")
    record = ArrayRecord({k: Array(v) for k, v in arrays.items()})

    def send(node: int) -> Message:
        shared = ConfigRecord({**meta, "shared-digest": total.accepted[f"node {node}"], "dtype": settings.dtype})
        return Message(RecordDict({"total": record, "meta": shared}), dst_node_id=node, message_type=ADOPT)

    def take_adoption(reply: Message) -> None:
        node = _node(reply)
        why = reply.error.reason if reply.has_error() else reply.content.config_records["meta"].get("error")
        if why:
            result.declined[node] = str(why)
            log.warning("%s: did not adopt the fleet total: %s", node, why)
        else:
            result.adopted.append(node)

    accepted = [n for n in nodes if f"node {n}" in total.accepted]
    silent = _exchange(grid, accepted, send, settings.timeout, take_adoption)
    result.declined.update({f"node {n}": "no answer in time" for n in silent})
    result.seconds = time.monotonic() - start
    log.info("round %d: %d of %d nodes added (%d samples, %d concepts), %d adopted the total in %.1f s", number,
             len(result.accepted), len(nodes), result.samples, result.concepts, len(result.adopted), result.seconds)
    return result


def run_fleet(grid: Grid, settings: RoundSettings, report: Callable[[RoundResult], None]) -> list[RoundResult]:
    """Every round of ``settings``; ``report`` gets each round's result as soon as the round ends."""
    _wait_for_nodes(grid, settings)
    results: list[RoundResult] = []
    for number in range(1, settings.rounds + 1):
        results.append(run_round(grid, settings, number))
        report(results[-1])
    empty = [r.round for r in results if not r.accepted]
    if empty:
        raise RuntimeError(f"fleet round(s) {empty}: no node's update was added")
    return results


def make_server_app(report: Callable[[RoundResult], None], settings: RoundSettings | None = None) -> ServerApp:
    """A ServerApp running ``settings``, or (None) the run config it is started with, giving each round's result
    to ``report``."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_fleet(grid, settings or RoundSettings.from_run_config(dict(context.run_config)), report)

    return app
