"""The JSON API as a script, a second browser tab or another web site would meet it."""

from __future__ import annotations

import io
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Server, jpeg_bytes, multipart, start_server, wait_for
from PIL import Image

from edgecvm.serve.access import AccessPolicy


def read_events(port: int, count: int, path: str = "/api/predictions", timeout_s: float = 60) -> list[dict]:
    """The first ``count`` answers of the predictions feed, read over a raw socket, which is then closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n".encode())
        buffer, events = b"", []
        while len(events) < count:
            chunk = sock.recv(65536)
            assert chunk, "the feed closed early"
            buffer += chunk
            events = [json.loads(line[6:]) for line in buffer.split(b"\n") if line.startswith(b"data: ")]
    return events[:count]


# ---- reading ----------------------------------------------------------------------------------------


def test_status_concepts_preview_and_page(local_server: Server):
    status, body = local_server.request("GET", "/api/status")
    assert status == 200 and body["stream"]["kind"] == "video" and body["stream"]["state"] in ("running", "reconnecting")
    assert body["memory"]["budget_mb"] > 0 and body["learning"]["paused"] is False
    status, concepts = local_server.request("GET", "/api/concepts")
    assert status == 200 and concepts["vocabulary_size"] == 200 and "vocabulary" not in concepts
    status, completed = local_server.request("GET", "/api/vocabulary?q=LEM")
    assert status == 200 and completed["matches"][0] == "lemon" and completed["vocabulary_size"] == 200
    status, preview = local_server.request("GET", "/api/preview.jpg")
    image = Image.open(io.BytesIO(preview["bytes"]))
    assert status == 200 and image.format == "JPEG" and max(image.size) <= 320
    status, page = local_server.request("GET", "/")
    assert status == 200 and b"<title>edgecvm</title>" in page["bytes"] and b"http" not in page["bytes"].split(b"<body>")[0]
    assert local_server.request("GET", "/static/app.js")[0] == 200


def test_the_feed_sends_answers(local_server: Server):
    events = read_events(local_server.port, 2)
    assert all({"concept", "score", "top_k", "frame"} <= set(e) for e in events)
    assert events[0]["frame"] != events[1]["frame"] and "clip.avi#" in events[0]["frame"]
    # read as fast as it decodes, the video has no frame rate to arrive at: no latency to speak of
    assert all(e["latency_ms"] is None for e in events) and local_server.status()["stream"]["answer_latency"] is None


def test_a_live_source_says_how_long_after_each_frame_arrived_it_was_answered(test_bundle: Path, clip: Path,
                                                                             tmp_path: Path):
    servers = start_server(test_bundle, str(clip), tmp_path / "state", AccessPolicy(None, loopback=True),
                           "127.0.0.1", loop=True, realtime=True)
    server = next(servers)
    try:
        events = read_events(server.port, 3)
        assert all(isinstance(e["latency_ms"], float) and e["latency_ms"] >= 0 for e in events)
        latency = server.status()["stream"]["answer_latency"]
        assert latency["frames"] >= 3 and 0 < latency["p50_ms"] <= latency["p95_ms"]
    finally:
        servers.close()


# ---- bad requests: a clear error, never a traceback, nothing learned ----------------------------------


@pytest.mark.parametrize("query", ["limit=5", "q=a&limit=0", "q=a&limit=101", "q=a&limit=many"])
def test_completion_needs_a_text_and_a_sane_limit(local_server: Server, query: str):
    status, body = local_server.request("GET", f"/api/vocabulary?{query}")
    assert status == 400 and ("q=TEXT" in body["error"] or "limit must be a whole number" in body["error"])


def test_an_unknown_concept_is_answered_with_close_names(local_server: Server):
    status, body = local_server.request("POST", "/api/teach", {"concept": "lemonn", "frames": 3})
    assert status == 400 and "lemon" in body["close"] and "unknown concept 'lemonn'" in body["error"]
    status, body = local_server.request("POST", "/api/upload", *_upload({"concept": "scool bus"}, [("a.jpg", jpeg_bytes())]))
    assert status == 400 and "school bus" in body["close"]


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'{"concept": "lemon", "frames": 0}',
                                  b'{"concept": "lemon", "frames": "many"}', b'{"frames": 3}'])
def test_malformed_teach_requests_get_a_message(local_server: Server, body: bytes):
    before = local_server.status()["learning"]["updates"]
    status, answer = local_server.request("POST", "/api/teach", body, {"Content-Type": "application/json"})
    assert status == 400 and answer["error"] and "Traceback" not in answer["error"]
    assert local_server.status()["learning"]["recording"] is None
    assert local_server.status()["learning"]["updates"] == before


def test_oversized_upload_is_refused(local_server: Server):
    before = local_server.status()["learning"]["updates"]
    body, content_type = multipart({"concept": "lemon"}, [("big.jpg", b"\xff" * (300 * 1024))])
    status, answer = local_server.request("POST", "/api/upload", body, {"Content-Type": content_type})
    assert status == 413 and "too large" in answer["error"]
    assert local_server.status()["learning"]["updates"] == before


def test_corrupt_and_bomb_images_are_refused_one_by_one(local_server: Server):
    bomb = io.BytesIO()
    Image.new("1", (9000, 9000)).save(bomb, "PNG")  # 81 MP: tiny as a file, 243 MB decoded
    files = [("good.jpg", jpeg_bytes()), ("broken.jpg", jpeg_bytes()[:100]), ("bomb.png", bomb.getvalue()),
             ("empty.jpg", b"")]
    status, answer = local_server.request("POST", "/api/upload", *_upload({"concept": "lemon"}, files))
    assert status == 200 and answer["taught"] == 1
    refused = {r["file"]: r["error"] for r in answer["refused"]}
    assert set(refused) == {"broken.jpg", "bomb.png", "empty.jpg"}
    assert "too large" in refused["bomb.png"] and "empty" in refused["empty.jpg"]
    assert {"name": "lemon", "examples": 1} in local_server.request("GET", "/api/concepts")[1]["known"]


def test_a_request_never_names_a_file(local_server: Server):
    assert local_server.request("GET", "/static/../../device/device.py")[0] == 404
    assert local_server.request("GET", "/api/preview.jpg?path=/etc/passwd")[1].get("bytes", b"")[:2] == b"\xff\xd8"


# ---- learning goes on whatever the clients do ----------------------------------------------------------


def test_a_client_leaving_mid_stream_does_not_disturb_learning(local_server: Server):
    for _ in range(3):
        read_events(local_server.port, 1)  # read one answer and hang up without a word
    updates = local_server.status()["learning"]["updates"]
    status, body = local_server.request("POST", "/api/teach", {"concept": "school bus", "frames": 5})
    assert status == 200 and body["recording"] == {"concept": "school bus", "remaining": 5}
    wait_for(lambda: local_server.status()["learning"]["updates"] >= updates + 5, what="5 recorded updates")
    assert local_server.status()["stream"]["state"] == "running"
    assert local_server.status()["learning"]["recording"] is None


def test_ten_concurrent_viewers(local_server: Server):
    results: list[object] = [None] * 10

    def view(i: int) -> None:
        try:
            events = read_events(local_server.port, 3)
            status, preview = local_server.request("GET", "/api/preview.jpg")
            results[i] = (len(events), status, local_server.request("GET", "/api/status")[0])
        except Exception as exc:  # reported below with the others
            results[i] = exc

    frames = local_server.status()["stream"]["frames"]
    threads = [threading.Thread(target=view, args=(i,)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert results == [(3, 200, 200)] * 10
    assert local_server.status()["stream"]["frames"] > frames


def test_pause_holds_a_recording_and_resume_continues_it(local_server: Server):
    assert local_server.request("POST", "/api/pause")[1] == {"paused": True}
    try:
        local_server.request("POST", "/api/teach", {"concept": "lemon", "frames": 4})
        frames = local_server.status()["stream"]["frames"]
        wait_for(lambda: local_server.status()["stream"]["frames"] > frames + 5, what="frames while paused")
        assert local_server.status()["learning"]["recording"] == {"concept": "lemon", "remaining": 4}
    finally:
        assert local_server.request("POST", "/api/resume")[1] == {"paused": False}
    wait_for(lambda: local_server.status()["learning"]["recording"] is None, what="the recording to finish")


# ---- who may ask ----------------------------------------------------------------------------------


def test_cross_origin_posts_are_refused(local_server: Server):
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"}):
        status, body = local_server.request("POST", "/api/pause", headers=headers)
        assert status == 403 and "cross-origin" in body["error"]
        assert local_server.status()["learning"]["paused"] is False
    own = {"Origin": f"http://127.0.0.1:{local_server.port}"}
    assert local_server.request("POST", "/api/resume", headers=own)[0] == 200


def test_a_local_server_answers_only_to_local_host_names(local_server: Server):
    status, body = local_server.request("GET", "/api/status", headers={"Host": "attacker.example"})
    assert status == 400 and "localhost" in body["error"]


@pytest.fixture(scope="module")
def public_server(test_bundle: Path, clip: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    policy = AccessPolicy("a-long-enough-token", loopback=False)
    yield from start_server(test_bundle, str(clip), tmp_path_factory.mktemp("state"), policy, "0.0.0.0", loop=True)


def test_a_token_is_required_beyond_loopback(public_server: Server):
    assert public_server.request("GET", "/api/status")[0] == 401
    assert public_server.request("GET", "/api/status", headers={"Authorization": "Bearer wrong-token"})[0] == 401
    assert public_server.request("POST", "/api/pause")[0] == 401
    assert public_server.request("GET", "/api/status", headers=public_server.auth())[0] == 200
    assert public_server.request("GET", "/api/status?token=a-long-enough-token")[0] == 200
    assert public_server.request("GET", "/")[0] == 200  # the page itself holds no data
    status, body = public_server.request("POST", "/api/pause", headers={**public_server.auth(),
                                                                        "Origin": "http://evil.example"})
    assert status == 403
    with pytest.raises(ValueError, match="token"):
        AccessPolicy(None, loopback=False)


def _upload(fields: dict[str, str], files: list[tuple[str, bytes]]) -> tuple[bytes, dict[str, str]]:
    body, content_type = multipart(fields, files)
    return body, {"Content-Type": content_type}

