"""The web app: the page (static files shipped in the package) and the JSON API it uses (docs/serve.md).

``GET /api/status``, ``/api/concepts``, ``/api/vocabulary?q=TEXT&limit=N``, ``/api/preview.jpg``, ``/api/predictions``
(server-sent events: one ``data:`` line of JSON per new answer, at most
``FEED_HZ`` a second); ``POST /api/teach`` (``{"concept": ..., "frames": N}``),
``/api/teach/stop``, ``/api/upload`` (multipart: ``concept`` and ``file``
parts), ``/api/pause``, ``/api/resume``. Every error is ``{"error": ...}``
with a 4xx status (an unknown concept adds ``"close": [names]``), never a
traceback. Handlers that touch the device run in Starlette's thread pool,
so the event loop keeps serving the feeds meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from edgecvm.errors import BadInputError, EdgeCVMError
from edgecvm.serve.access import AccessMiddleware, AccessPolicy
from edgecvm.serve.session import ServeSession, UnknownConcept

log = logging.getLogger(__name__)
FEED_HZ = 8  # answers per second at most on the predictions feed: smooth bars, little traffic
MAX_UPLOAD_FILES = 64
COMPLETIONS = 20  # names /api/vocabulary returns unless ?limit= says otherwise: what a datalist shows at once
STATIC = ("edgecvm.serve", "static")


def create_app(session: ServeSession, policy: AccessPolicy) -> Starlette:
    static = StaticFiles(packages=[STATIC])
    index, _ = static.lookup_path("index.html")

    async def page(request: Request) -> Response:
        return FileResponse(index, headers={"cache-control": "no-store"})

    async def status(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(session.status))

    async def concepts(request: Request) -> Response:
        return JSONResponse(session.concepts())

    async def vocabulary(request: Request) -> Response:
        limit = request.query_params.get("limit", str(COMPLETIONS))
        return JSONResponse(await run_in_threadpool(session.vocabulary, request.query_params.get("q"),
                                                    int(limit) if limit.isdigit() else limit))

    async def preview(request: Request) -> Response:
        jpeg = await run_in_threadpool(session.preview_jpeg)
        if jpeg is None:
            return JSONResponse({"error": "no frame yet"}, status_code=404)
        return Response(jpeg, media_type="image/jpeg", headers={"cache-control": "no-store"})

    async def predictions(request: Request) -> Response:
        return StreamingResponse(_feed(session), media_type="text/event-stream",
                                 headers={"cache-control": "no-store", "x-accel-buffering": "no"})

    async def teach(request: Request) -> Response:
        body = await _json_body(request)
        # In a worker thread: a new concept name is embedded first (the text encoder runs for ~1 s).
        return JSONResponse(await run_in_threadpool(session.teach, body.get("concept"), body.get("frames")))

    async def stop_recording(request: Request) -> Response:
        return JSONResponse(session.stop_recording())

    async def pause(request: Request) -> Response:
        return JSONResponse(session.set_paused(True))

    async def resume(request: Request) -> Response:
        return JSONResponse(session.set_paused(False))

    async def upload(request: Request) -> Response:
        try:
            form = await request.form(max_files=MAX_UPLOAD_FILES, max_fields=8, max_part_size=policy.max_body_bytes)
        except HTTPException as exc:
            raise BadInputError(f"malformed upload: {exc.detail}") from None
        except Exception as exc:  # the multipart parser's own errors: a malformed body, not a server fault
            raise BadInputError(f"malformed upload ({type(exc).__name__}); send multipart/form-data with a "
                                "'concept' field and 'file' parts") from None
        try:
            files = []
            for item in form.getlist("file"):
                if not isinstance(item, UploadFile):
                    raise BadInputError("'file' parts must be files")
                files.append((item.filename or "image", await item.read()))
            concept = form.get("concept")
        finally:
            await form.close()
        return JSONResponse(await run_in_threadpool(session.upload, concept, files))

    async def bad_input(request: Request, exc: Exception) -> Response:
        body: dict[str, object] = {"error": str(exc)}
        if isinstance(exc, UnknownConcept):
            body["close"] = exc.close
        return JSONResponse(body, status_code=400)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

    async def server_error(request: Request, exc: Exception) -> Response:
        log.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, exc, exc_info=exc)
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); the learned state is unaffected"},
                            status_code=500)

    routes = [
        Route("/", page),
        Route("/api/status", status),
        Route("/api/concepts", concepts),
        Route("/api/vocabulary", vocabulary),
        Route("/api/preview.jpg", preview),
        Route("/api/predictions", predictions),
        Route("/api/teach", teach, methods=["POST"]),
        Route("/api/teach/stop", stop_recording, methods=["POST"]),
        Route("/api/pause", pause, methods=["POST"]),
        Route("/api/resume", resume, methods=["POST"]),
        Route("/api/upload", upload, methods=["POST"]),
        Mount("/static", static, name="static"),
    ]
    return Starlette(routes=routes, middleware=[Middleware(AccessMiddleware, policy=policy)],
                     exception_handlers={EdgeCVMError: bad_input, HTTPException: http_error,
                                         Exception: server_error})


async def _json_body(request: Request) -> dict[str, object]:
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        raise BadInputError('expected a JSON object, e.g. {"concept": "lemon", "frames": 30}') from None
    if not isinstance(body, dict):
        raise BadInputError('expected a JSON object, e.g. {"concept": "lemon", "frames": 30}')
    return body


async def _feed(session: ServeSession) -> AsyncIterator[str]:
    """Server-sent events: each new answer once; ends when the server stops (a client leaving cancels it)."""
    seen = -1
    yield "retry: 1000\n\n"
    while not session.closing:
        if session.answer_seq != seen and session.answer is not None:
            seen = session.answer_seq
            yield f"data: {json.dumps(session.answer)}\n\n"
        await asyncio.sleep(1 / FEED_HZ)
