"""A server in the test process (API tests) and a video made from the built-in sample."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from edgecvm.device.device import open_device  # noqa: E402
from edgecvm.device.streams import open_stream  # noqa: E402
from edgecvm.serve.access import AccessPolicy  # noqa: E402
from edgecvm.serve.app import create_app  # noqa: E402
from edgecvm.serve.server import bind, serve  # noqa: E402
from edgecvm.serve.session import ServeSession  # noqa: E402

FPS = 10
SEGMENT = 40  # frames per concept in the video: 4 s at 10 frames/s
CLIP_CONCEPTS = ("lemon", "school bus")


@pytest.fixture(scope="session")
def clip(samples_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A video: SEGMENT frames of the sample's val images of each of CLIP_CONCEPTS, one concept after the other."""
    cv2 = pytest.importorskip("cv2")
    path = tmp_path_factory.mktemp("clip") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), float(FPS), (160, 160))
    for concept in CLIP_CONCEPTS:
        images = sorted((samples_dir / "val" / concept).iterdir())
        for i in range(SEGMENT):
            bgr = cv2.imread(str(images[i * len(images) // SEGMENT]))
            writer.write(cv2.resize(bgr, (160, 160)))
    writer.release()
    return path


def wait_for(condition: Callable[[], object], timeout_s: float = 60.0, what: str = "condition") -> object:
    """Poll ``condition`` until it is truthy (its value is returned) or fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@dataclass
class Server:
    session: ServeSession
    port: int
    token: str | None

    def request(self, method: str, path: str, body: bytes | dict | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        all_headers = dict(headers or {})
        if isinstance(body, dict):
            body = json.dumps(body).encode()
            all_headers.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=body, headers=all_headers)
        response = conn.getresponse()
        data = response.read()
        conn.close()
        is_json = response.getheader("content-type", "").startswith("application/json")
        return response.status, json.loads(data) if is_json else {"bytes": data}

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def status(self) -> dict:
        return self.request("GET", "/api/status", headers=self.auth())[1]


def start_server(bundle: Path, stream_spec: str, state: Path, policy: AccessPolicy, host: str,
                 **stream_options: object) -> Iterator[Server]:
    device = open_device(bundle, state=state)
    stop = threading.Event()
    with open_stream(stream_spec, **stream_options) as stream:  # type: ignore[arg-type]
        session = ServeSession(device, stream, should_stop=stop.is_set)
        sock = bind(host, 0)
        thread = threading.Thread(target=serve, args=(create_app(session, policy), sock, stop.is_set), daemon=True)
        session.start()
        thread.start()
        server = Server(session, sock.getsockname()[1], policy.token)
        wait_for(lambda: server.session.answer is not None, what="a first answer")
        try:
            yield server
        finally:
            stop.set()
            thread.join(timeout=30)
            session.close()


@pytest.fixture(scope="module")
def local_server(test_bundle: Path, clip: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """127.0.0.1, no token, bodies up to 256 KiB; the clip looped as fast as it decodes."""
    yield from start_server(test_bundle, str(clip), tmp_path_factory.mktemp("state"),
                            AccessPolicy(None, loopback=True, max_body_bytes=256 * 1024), "127.0.0.1", loop=True)


def jpeg_bytes(size: int = 64, value: int = 128) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), value, dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def multipart(fields: dict[str, str], files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = "edgecvmtestboundary"
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for filename, data in files:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"
