"""`edgecvm serve` from the command line: the URL with its token, the labelled source taught, errors in one line."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from device_cli import REPO, run_cli

pytest.importorskip("uvicorn")


def get(url: str, token: str | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def test_a_public_bind_prints_a_token_and_a_labelled_source_is_taught(test_bundle: Path, samples_dir: Path,
                                                                       tmp_path: Path):
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    process = subprocess.Popen(
        [sys.executable, "-m", "edgecvm", "serve", "--bundle", str(test_bundle), "--stream", str(samples_dir / "val"),
         "--every", "5", "--state", str(tmp_path / "state"), "--host", "0.0.0.0", "--port", "0", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        serving = json.loads(process.stdout.readline())  # type: ignore[union-attr]
        token = serving["url"].split("?token=")[1]
        assert serving["event"] == "serving" and serving["host"] == "0.0.0.0" and len(token) >= 16
        base = f"http://127.0.0.1:{serving['port']}"
        assert get(f"{base}/api/status")[0] == 401
        deadline = time.monotonic() + 60
        while get(f"{base}/api/status", token)[1]["stream"]["state"] != "ended":  # 20 frames, then the page stays up
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.1)
        status, concepts = get(f"{base}/api/concepts", token)
        assert status == 200 and {k["name"]: k["examples"] for k in concepts["known"]} == {
            name: 2 for name in sorted(p.name for p in (samples_dir / "val").iterdir())}
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    summary = json.loads(out.strip().splitlines()[-1])
    assert process.returncode == 130 and err.strip().splitlines()[-1].startswith("edgecvm: error: interrupted by SIGINT")
    assert summary["stream_state"] == "ended" and summary["updates_total"] == 20 and summary["saved_update"] == 20


@pytest.mark.parametrize("extra, message", [
    (["--stream", "no-such-source"], "no such file, folder or camera"),
    (["--stream", "camera9", "--loop"], "only a finite source"),
    (["--token", "short"], "at least 8 characters"),
])
def test_bad_options_are_one_line(capsys, test_bundle: Path, samples_dir: Path, tmp_path: Path, extra: list[str],
                                  message: str):
    args = ["serve", "--bundle", test_bundle, "--stream", samples_dir / "val", "--state", tmp_path / "s", "--port", "0"]
    run = run_cli(capsys, *args, *extra)
    assert run.code == 2 and message in run.stderr and len(run.stderr.strip().splitlines()) == 1


def test_a_port_in_use_is_one_line(capsys, test_bundle: Path, samples_dir: Path, tmp_path: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        run = run_cli(capsys, "serve", "--bundle", test_bundle, "--stream", samples_dir / "val", "--state",
                      tmp_path / "s", "--port", port)
    assert run.code == 2 and f"cannot listen on 127.0.0.1:{port}" in run.stderr


def test_without_the_serve_extra_the_error_names_it(capsys, monkeypatch, test_bundle: Path, samples_dir: Path,
                                                    tmp_path: Path):
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    run = run_cli(capsys, "serve", "--bundle", test_bundle, "--stream", samples_dir / "val", "--state", tmp_path / "s")
    assert run.code == 2 and "pip install 'edgecvm[serve]'" in run.stderr
