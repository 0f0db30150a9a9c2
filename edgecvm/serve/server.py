"""Running the app: uvicorn on a socket bound before it starts, stopped by the command, not by uvicorn.

The socket is bound first so the command knows the port (``--port 0`` picks
one) and can print the URL before serving. uvicorn normally takes SIGINT and
SIGTERM itself and re-raises them once it has shut down, which would end the
process before the learned state is checkpointed; here the command keeps the
signals (``should_stop`` is its flag) and checkpoints after ``serve``
returns, as ``edgecvm learn`` does.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterator

import uvicorn

from edgecvm.errors import BadInputError
from edgecvm.serve.access import ASGIApp

GRACEFUL_SHUTDOWN_S = 2.0  # open feeds end by themselves when the session closes; this bounds the rest


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port); ``BadInputError`` when it cannot be had."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise BadInputError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    sock.set_inheritable(True)
    return sock


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, should_stop: Callable[[], bool]) -> None:
        super().__init__(config)
        self.should_stop = should_stop

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the command owns SIGINT/SIGTERM (see the module docstring)

    async def on_tick(self, counter: int) -> bool:
        return await super().on_tick(counter) or self.should_stop()


def serve(app: ASGIApp, sock: socket.socket, should_stop: Callable[[], bool]) -> None:
    """Serve ``app`` on ``sock`` until ``should_stop()`` (polled ten times a second).

    The protocols are named, not left to uvicorn's "auto": asyncio's loop and
    the pure-Python h11 parser, as ``pip install edgecvm[serve]`` installs
    them, and no WebSocket support (the page uses server-sent events). With
    "auto", a device that happens to have uvloop, httptools or websockets
    installed loads them: serve's peak under the Pi Zero 2 W profile was
    100.2-100.4 MB that way and 96.6-97.8 MB named (docs/serve.md), and it
    would answer a WebSocket handshake the app never uses.
    """
    config = uvicorn.Config(app, log_config=None, log_level="warning", access_log=False, lifespan="off",
                            loop="asyncio", http="h11", ws="none", timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)
    _Server(config, should_stop).run(sockets=[sock])
