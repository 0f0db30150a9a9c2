"""Flower's programs as edgecvm starts them: offline switches in their own environment (the caller's untouched), an
app dir flwr accepts, TLS asked for unless turned off, and one line naming the extra when Flower is missing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgecvm.errors import EdgeCVMError
from edgecvm.fleet.launch import (
    RUN_CONFIG,
    FlowerMissing,
    Tls,
    flower_program,
    offline_env,
    superlink_command,
    supernode_command,
    write_app,
    write_connection,
    write_run_config,
)


def test_flower_runs_offline_without_changing_the_callers_environment():
    before = dict(os.environ)
    env = offline_env({"PATH": "/usr/bin", "HOME": "/h"}, ray_tmpdir="/tmp/r1", flwr_home="/tmp/home")
    assert dict(os.environ) == before
    assert {k: env[k] for k in ("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "FLWR_DISABLE_UPDATE_CHECK",
                                "FLWR_TELEMETRY_ENABLED", "RAY_USAGE_STATS_ENABLED", "RAY_TMPDIR", "FLWR_HOME")} == {
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_TELEMETRY_ENABLED": "0", "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": "/tmp/r1", "FLWR_HOME": "/tmp/home"}
    assert env["PATH"].endswith("/usr/bin") and env["HOME"] == "/h"


def test_the_app_dir_is_one_flwr_accepts(tmp_path: Path):
    config_utils = pytest.importorskip("flwr.cli.config_utils")
    write_app(tmp_path / "app")
    # raises ValueError on an invalid app; check_module: its components import (edgecvm's own modules)
    config, _ = config_utils.load_and_validate(tmp_path / "app" / "pyproject.toml", check_module=True)
    assert config["tool"]["flwr"]["app"]["config"] == RUN_CONFIG
    write_run_config(tmp_path / "run.toml", {"rounds": 2, "dtype": "float16"})
    assert (tmp_path / "run.toml").read_text() == 'rounds = 2\ndtype = "float16"\n'
    with pytest.raises(EdgeCVMError, match="rouns"):
        write_run_config(tmp_path / "run.toml", {"rouns": 2})


def test_tls_is_asked_for_unless_turned_off(tmp_path: Path):
    pytest.importorskip("flwr")
    with pytest.raises(EdgeCVMError, match="--cert.*--insecure"):
        superlink_command("0.0.0.0:9092", Tls(ca_certfile="ca.crt"))
    with pytest.raises(EdgeCVMError, match="--ca-cert"):
        supernode_command("host:9092", 9094, {"state-dir": "/s"}, Tls())
    cmd = superlink_command("127.0.0.1:9", Tls(ca_certfile="c", certfile="s", keyfile="k"), node_auth=True)
    assert cmd[1:] == ["--host", "127.0.0.1", "--port", "9", "--disable-runtime-dependency-installation",
                       "--ssl-ca-certfile", "c", "--ssl-certfile", "s", "--ssl-keyfile", "k",
                       "--enable-supernode-auth"]
    node = supernode_command("h:9", 9094, {"state-dir": "/s d", "bundle": "/b"}, Tls(insecure=True), max_wait=5)
    assert node[node.index("--node-config") + 1] == 'state-dir="/s d" bundle="/b"' and "--insecure" in node
    write_connection(tmp_path, "h:9", Tls(ca_certfile=str(tmp_path / "ca.crt")))
    assert (tmp_path / "config.toml").read_text() == (
        f'[superlink.fleet]\naddress = "h:9"\nroot-certificates = "{tmp_path / "ca.crt"}"\n')


def test_a_missing_flower_is_one_line_naming_the_extra():
    with pytest.raises(FlowerMissing, match=r"flower-nothing is not installed: pip install 'edgecvm\[fleet\]'"):
        flower_program("flower-nothing")
