"""Who may reach the server and what a request may carry, as one ASGI middleware in front of the app.

- **Token.** On a bind beyond this machine, or when one was given, every
  ``/api/`` request needs it: ``Authorization: Bearer T`` or ``?token=T`` (the
  page's URL carries it; ``EventSource`` and ``<img>`` cannot send headers).
  The page's static files hold no data and need none. Wrong or missing: 401.
- **Host.** On a loopback bind without a token only loopback host names are
  answered (400 otherwise): a web page whose name resolves to 127.0.0.1 (DNS
  rebinding) cannot read or drive the device.
- **Same origin.** A request that changes state (POST) from a browser must
  come from the page itself: an ``Origin`` (or ``Sec-Fetch-Site``) naming
  another site is refused with 403, so another site open in the same browser
  cannot teach or pause the device. Scripts (no such headers) are unaffected.
- **Size.** A request body over ``max_body_bytes`` is refused with 413 before
  it is read further.

Refusals are JSON ``{"error": ...}`` like every other error of the API.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024  # a few phone photos per upload


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class AccessPolicy:
    token: str | None  # None: no token (only allowed on a loopback bind)
    loopback: bool  # bound to a loopback address
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES

    def __post_init__(self) -> None:
        if not self.loopback and not self.token:
            raise ValueError("a server reachable beyond this machine needs a token")


class AccessMiddleware:
    def __init__(self, app: ASGIApp, policy: AccessPolicy) -> None:
        self.app, self.policy = app, policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            await _json(send, *refusal)
            return
        if scope["method"] in ("POST", "PUT", "PATCH", "DELETE"):
            body = await self._read_body(receive, headers)
            if body is None:
                await _json(send, 413, f"request body too large (limit {self.policy.max_body_bytes // 1024} KiB)")
                return
            receive = _replay(body)
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str] | None:
        policy = self.policy
        host = headers.get("host", "")
        if policy.token is None and _host_name(host) not in LOOPBACK_NAMES:
            return 400, f"this server answers only to localhost/127.0.0.1, not to host {host!r}"
        path: str = scope["path"]
        if policy.token is not None and path.startswith("/api/") and not self._has_token(scope, headers):
            return 401, "this server needs its token: open the URL `edgecvm serve` printed, or send 'Authorization: " \
                        "Bearer TOKEN'"
        if scope["method"] != "GET" and scope["method"] != "HEAD":
            origin = headers.get("origin")
            fetch_site = headers.get("sec-fetch-site")
            own = f"{scope.get('scheme', 'http')}://{host}"
            if (origin is not None and origin != own) or (origin is None and fetch_site not in (None, "same-origin",
                                                                                               "none")):
                return 403, f"cross-origin request refused (origin {origin or fetch_site!r}, this server is {own})"
        return None

    def _has_token(self, scope: Scope, headers: dict[str, str]) -> bool:
        given = ""
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        else:
            given = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [""])[0]
        return hmac.compare_digest(given.encode(), (self.policy.token or "").encode())

    async def _read_body(self, receive: Receive, headers: dict[str, str]) -> bytes | None:
        """The whole body, or None as soon as it is known to exceed the limit."""
        limit = self.policy.max_body_bytes
        try:
            if int(headers.get("content-length", "0")) > limit:
                return None
        except ValueError:
            return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _host_name(host: str) -> str:
    if host.startswith("["):
        return host.split("]")[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


async def _json(send: Send, status: int, error: str) -> None:
    body = json.dumps({"error": error}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
