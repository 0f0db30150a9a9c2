"""The web server loads only the protocols ``edgecvm[serve]`` installs, whatever else the environment has."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

OPTIONAL = ("uvloop", "httptools", "websockets", "wsproto")  # what uvicorn's "auto" would pick up

_SERVE_ONE_REQUEST = """
import json, sys, threading, urllib.request
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from edgecvm.serve.server import bind, serve

app = Starlette(routes=[Route("/", lambda request: PlainTextResponse("ok"))])
sock = bind("127.0.0.1", 0)  # listening already: the client's request waits for the server
port = sock.getsockname()[1]
answered, body = threading.Event(), []
def client():
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as response:
        body.append(response.read().decode())
    answered.set()
threading.Thread(target=client, daemon=True).start()
serve(app, sock, should_stop=answered.is_set)
print(json.dumps({"body": body, "loaded": sorted(m for m in %r if m in sys.modules)}))
"""


@pytest.mark.skipif(not any(importlib.util.find_spec(name) for name in OPTIONAL),
                    reason="none of uvicorn's optional protocol packages is installed here")
def test_the_server_loads_none_of_uvicorns_optional_protocols() -> None:
    done = subprocess.run([sys.executable, "-c", _SERVE_ONE_REQUEST % (OPTIONAL,)], capture_output=True, text=True,
                          timeout=120, check=True)
    assert json.loads(done.stdout.splitlines()[-1]) == {"body": ["ok"], "loaded": []}
