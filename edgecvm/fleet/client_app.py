"""The fleet's Flower ClientApp: a device's state dir answering the server's two messages (node.py does the work).

Where the state lives comes from the node's config (``flower-supernode
--node-config 'state-dir="..." bundle="..."'``, which `edgecvm fleet join`
writes); in a simulation, whose virtual nodes share one config, from the run
config's ``state-root`` and the node's ``partition-id`` (device-<id> under
it). Anything wrong with the device's state is answered as an ``error`` in
the reply, which the server logs under the node's name; the state is then
left as it was.

Imported only by Flower: the rest of edgecvm runs without flwr.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from edgecvm.errors import EdgeCVMError
from edgecvm.fleet.node import DeviceNode

log = logging.getLogger(__name__)


def node_of(context: Context) -> DeviceNode:
    """The device this node stands for (module docstring)."""
    node, run = dict(context.node_config), dict(context.run_config)
    if "state-dir" in node:
        state_dir = str(node["state-dir"])
    elif run.get("state-root") and "partition-id" in node:
        state_dir = str(Path(str(run["state-root"])) / f"device-{int(node['partition-id'])}")
    else:
        raise EdgeCVMError("this node was not given a state dir (node config state-dir)")
    bundle = node.get("bundle") or run.get("bundle")
    if not bundle:
        raise EdgeCVMError("this node was not given a bundle (node config bundle)")
    return DeviceNode(state_dir, str(bundle), str(node.get("profile") or run.get("profile") or "host"))


def _refusal(msg: Message, exc: Exception) -> Message:
    log.warning("%s", exc)
    return Message(RecordDict({"meta": ConfigRecord({"error": str(exc)})}), reply_to=msg)


def make_client_app(device: Callable[[Context], DeviceNode] = node_of) -> ClientApp:
    """The ClientApp, its device found by ``device`` (default: from the node and run config, module docstring)."""
    app = ClientApp()

    @app.train()
    def share(msg: Message, context: Context) -> Message:
        """Send this device's own statistics."""
        try:
            arrays, meta = device(context).share(str(msg.content.config_records["config"]["dtype"]))
        except (EdgeCVMError, OSError, ValueError) as exc:
            return _refusal(msg, exc)
        record = ArrayRecord({k: Array(v) for k, v in arrays.items()})
        return Message(RecordDict({"update": record, "meta": ConfigRecord(meta)}), reply_to=msg)

    @app.train("adopt")
    def adopt(msg: Message, context: Context) -> Message:
        """Solve the head from the fleet total and save the state."""
        meta = dict(msg.content.config_records["meta"])
        arrays = {k: a.numpy() for k, a in msg.content.array_records["total"].items()}
        try:
            adopted = device(context).adopt(arrays, meta, str(meta["shared-digest"]), str(meta["dtype"]))
        except (EdgeCVMError, OSError, ValueError) as exc:
            return _refusal(msg, exc)
        return Message(RecordDict({"meta": ConfigRecord(adopted.as_dict())}), reply_to=msg)

    return app


app = make_client_app()
