"""`edgecvm serve`: the device's own web page, teaching and watching it while it learns from its stream.

One process owns the stream and the learner (``serve.session``: the learn
loop of ``edgecvm learn``) and serves the page and its JSON API
(docs/serve.md). It binds 127.0.0.1 unless ``--host`` says otherwise; any
other bind needs a token, given or generated and printed once inside the URL
to open. SIGINT/SIGTERM stop it after a checkpoint (exit 130), as ``learn``.
"""

from __future__ import annotations

import argparse
import secrets
import socket
import sys

from edgecvm.cli.common import (
    HEAD_METHOD_CHOICES,
    StopOnSignal,
    add_device_arguments,
    add_realtime_argument,
    add_stream_arguments,
    add_unknown_arguments,
    json_line,
    positive_int,
    stream_from_args,
)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn  # noqa: F401  (a missing extra is reported before the device is opened)

    from edgecvm.device.device import open_device
    from edgecvm.errors import BadInputError, InterruptedAfterCheckpoint
    from edgecvm.serve.access import AccessPolicy, is_loopback
    from edgecvm.serve.app import create_app
    from edgecvm.serve.server import bind, serve
    from edgecvm.serve.session import ServeSession

    loopback = is_loopback(args.host)
    token = args.token
    if token is not None and len(token) < 8:
        raise BadInputError("--token must be at least 8 characters")
    if token is None and not loopback:
        token = secrets.token_urlsafe(16)
    if args.max_upload_mb <= 0:
        raise BadInputError(f"--max-upload-mb must be > 0, got {args.max_upload_mb}")
    policy = AccessPolicy(token, loopback, max_body_bytes=int(args.max_upload_mb * 1024 * 1024))
    device = open_device(args.bundle, args.profile, args.state, head_method=args.head_method,
                         checkpoint_every=args.checkpoint_every, tune_process=True, unknown=args.unknown == "on",
                         unknown_tpr=args.unknown_tpr, frame_size=args.camera_size)
    sock = bind(args.host, args.port)
    with stream_from_args(args, device, loop=args.loop, realtime=args.realtime) as stream, \
            StopOnSignal(stream) as stop:
        session = ServeSession(device, stream, top_k=args.top_k, should_stop=lambda: stop.stopped)
        port = sock.getsockname()[1]
        shown_host = socket.gethostname() if args.host in ("0.0.0.0", "::") else args.host  # every interface
        shown_host = f"[{shown_host}]" if ":" in shown_host else shown_host
        url = f"http://{shown_host}:{port}/" + (f"?token={token}" if token else "")
        if args.json:
            print(json_line({"event": "serving", "url": url, "host": args.host, "port": port}), flush=True)
        else:
            print(f"edgecvm serve: open {url}  (Ctrl-C checkpoints and stops)", flush=True)
        session.start()
        try:
            serve(create_app(session, policy), sock, should_stop=lambda: stop.stopped)
        finally:
            session.close()
    streamed = session.stream_summary or {}
    summary = {**session.loop.summary(stop.name), "stream_state": session.stream_state,
               "stream_error": session.stream_error, "uploaded": session.uploaded,
               "stream_elapsed_s": streamed.get("elapsed_s"), "stream_frames_per_s": streamed.get("frames_per_s")}
    if args.json:
        print(json_line(summary), flush=True)
    else:
        print(f"served {summary['frames']} frames ({summary['stream_frames_per_s']} frames/s, stream {summary['stream_state']}); "
              f"known concepts ({len(summary['known'])}): {', '.join(summary['known'])}; state {summary['state']} "  # type: ignore[arg-type]
              f"(update {summary['saved_update']}); peak RSS {summary['peak_rss_mb']} MB")
        sys.stdout.flush()
    if stop.stopped:
        raise InterruptedAfterCheckpoint(f"interrupted by {stop.name}; state checkpointed at update "
                                         f"{session.loop.checkpointer.last_saved_update} in {summary['state']}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "serve", help="teach and watch the device from a web page (and its JSON API) while it learns",
        description="Serve a web page (live preview, the current answer, teach by recording frames or uploading "
        "images, pause/resume, status) and the JSON API it uses (docs/serve.md), while the device learns from "
        "--stream into --state like `edgecvm learn`. Frames of a labelled source (concept sub-folders) are taught "
        "their labels; others are only predicted until a concept is recorded. Binds 127.0.0.1 by default; any "
        "other --host needs a token (given with --token, or generated and printed in the URL). Exit codes: 0 ok, "
        "2 bad input, 3 memory budget exceeded, 130 interrupted (after a clean checkpoint).")
    add_device_arguments(parser)
    add_stream_arguments(parser)
    add_unknown_arguments(parser)
    parser.add_argument("--state", required=True, metavar="DIR", help="state dir: created, or resumed when it exists")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"address to listen on (default {DEFAULT_HOST}: this machine only; 0.0.0.0: every "
                             "interface, with a token)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT}; 0: any free)")
    parser.add_argument("--token", help="token the page and API need (default: none on 127.0.0.1, a generated one "
                                        "printed in the URL on any other address)")
    parser.add_argument("--loop", action="store_true", help="read a finite source (video, folder) again when it ends")
    add_realtime_argument(parser)
    parser.add_argument("--top-k", type=positive_int, default=5, metavar="K", help="answers shown per frame (default 5)")
    parser.add_argument("--max-upload-mb", type=float, default=8.0, metavar="MB",
                        help="largest request body, e.g. one upload of several images (default 8)")
    parser.add_argument("--checkpoint-every", type=positive_int, metavar="N",
                        help="updates between checkpoints (default: the profile's checkpoint_every)")
    parser.add_argument("--head-method", choices=HEAD_METHOD_CHOICES, default=None,
                        help="lda or sgd (as for `edgecvm learn`); fixed once a state exists")
    parser.add_argument("--json", action="store_true", help="the URL and the final summary as JSON lines on stdout")
    parser.set_defaults(func=cmd_serve)
