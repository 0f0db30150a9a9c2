"""RSS a web framework adds to a process: a minimal JSON route and a server-sent-events route, after one request each.

    python tools/web_framework_memory.py starlette|flask|aiohttp

Run in a venv with starlette, uvicorn, flask and aiohttp; prints one JSON line (docs/serve.md, Why Starlette).
"""

import json
import socket
import sys
import threading
import time
import urllib.request


def rss_mb():
    with open("/proc/self/status") as fh:
        d = dict(line.split(":", 1) for line in fh)
    return int(d["VmRSS"].split()[0]) / 1024, int(d["VmHWM"].split()[0]) / 1024


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


kind = sys.argv[1]
base = rss_mb()[0]
port = free_port()
if kind == "starlette":
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    async def status(request):
        return JSONResponse({"ok": True})

    async def feed(request):
        async def gen():
            for i in range(3):
                yield f"data: {i}\n\n"

        return StreamingResponse(gen(), media_type="text/event-stream")

    app = Starlette(routes=[Route("/api/status", status), Route("/api/feed", feed)])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", loop="asyncio",
                                           http="h11", ws="none"))  # as edgecvm.serve.server names them
    threading.Thread(target=server.run, daemon=True).start()
elif kind == "flask":
    from flask import Flask, Response, jsonify
    from werkzeug.serving import make_server

    app = Flask("x")

    @app.get("/api/status")
    def status():
        return jsonify(ok=True)

    @app.get("/api/feed")
    def feed():
        return Response((f"data: {i}\n\n" for i in range(3)), mimetype="text/event-stream")

    srv = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
elif kind == "aiohttp":
    import asyncio

    from aiohttp import web

    async def status(request):
        return web.json_response({"ok": True})

    async def feed(request):
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(3):
            await resp.write(f"data: {i}\n\n".encode())
        return resp

    def run():
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        app = web.Application()
        app.router.add_get("/api/status", status)
        app.router.add_get("/api/feed", feed)
        runner = web.AppRunner(app)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        loop.run_forever()

    threading.Thread(target=run, daemon=True).start()
for _ in range(200):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=1).read()
        break
    except OSError:
        time.sleep(0.05)
urllib.request.urlopen(f"http://127.0.0.1:{port}/api/feed", timeout=5).read()
rss, hwm = rss_mb()
print(
    json.dumps(
        {
            "framework": kind,
            "baseline_mb": round(base, 1),
            "rss_mb": round(rss, 1),
            "added_mb": round(rss - base, 1),
            "peak_mb": round(hwm, 1),
        }
    )
)
