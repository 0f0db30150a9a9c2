"""Starting Flower's own programs for a fleet: the app dir ``flwr run`` reads, the environment every Flower process
gets, and the command lines of ``flower-superlink``, ``flower-supernode`` and ``flwr run``.

Why wrap them: Flower's defaults suit a connected workstation, not a fleet
that must work offline. Every Flower process started here gets, in its own
environment (the caller's ``os.environ`` is never changed): runtime
dependency installation off (by default the SuperLink installs an app's
dependencies from the package registry when a run starts), no update check,
no telemetry, no Ray usage statistics, and a short Ray temp dir (Ray's socket
path must stay under 107 bytes). ``flwr run`` gets a ``FLWR_HOME`` of its own
holding one explicit connection, so it never starts Flower's detached local
SuperLink and never touches the user's ``~/.flwr``; and the app dir is
generated (never the repository's pyproject.toml, which ``flwr`` may
rewrite).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from edgecvm.errors import EdgeCVMError

INSTALL_HINT = "pip install 'edgecvm[fleet]'"
CONNECTION = "fleet"  # the one connection in a FLWR_HOME made here
# A line of the ServerApp's output (cli/fleet_server_app.py) that holds a round's result: this, then its JSON.
ROUND_RESULT_PREFIX = "edgecvm fleet round result: "
# The run config a fleet run understands (server_app.RoundSettings), with its defaults: flwr run accepts only keys
# the app's pyproject declares.
RUN_CONFIG: dict[str, str | int | float] = {
    "rounds": 1, "min-nodes": 2, "wait": 120.0, "timeout": 300.0, "dtype": "float32", "bundle-sha256": "",
    "anchors-sha256": "", "feature-dim": 0, "state-root": "", "bundle": "", "profile": "",
}


class FlowerMissing(EdgeCVMError):
    def __init__(self, program: str) -> None:
        super().__init__(f"Flower's {program} is not installed: {INSTALL_HINT}")


def flower_program(name: str) -> str:
    """The path of one of Flower's programs, next to this Python's (a venv) or on the PATH."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise FlowerMissing(name)
    return found


def offline_env(base: Mapping[str, str], ray_tmpdir: str | None = None, flwr_home: str | None = None) -> dict[str, str]:
    """``base`` (e.g. ``os.environ``) with the offline switches of the module docstring, as a new dict."""
    env = dict(base)
    # The SuperLink and SuperNode start Flower's other programs (flower-superexec) by name: find them beside ours.
    programs = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([programs, *(p for p in env.get("PATH", "").split(os.pathsep) if p)])
    env.update({"FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "FLWR_DISABLE_UPDATE_CHECK": "1",
                "FLWR_TELEMETRY_ENABLED": "0", "RAY_USAGE_STATS_ENABLED": "0"})
    if ray_tmpdir:
        env["RAY_TMPDIR"] = ray_tmpdir
    if flwr_home:
        env["FLWR_HOME"] = flwr_home
    return env


def _toml_value(value: object) -> str:
    """A TOML scalar: JSON spells strings, whole numbers and floats the same way, and true/false too."""
    return json.dumps(value)


def write_app(app_dir: Path) -> Path:
    """Write the Flower app's pyproject.toml into ``app_dir``: its components are edgecvm's own modules."""
    app_dir.mkdir(parents=True, exist_ok=True)
    config = "\n".join(f"{key} = {_toml_value(value)}" for key, value in RUN_CONFIG.items())
    (app_dir / "pyproject.toml").write_text(f"""[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "edgecvm-fleet"
version = "1.0.0"
description = "edgecvm fleet round: every device's own class statistics summed, the total sent back"
license = "Apache-2.0"
dependencies = []

[tool.flwr.app]
publisher = "edgecvm"

[tool.flwr.app.components]
serverapp = "edgecvm.cli.fleet_server_app:app"
clientapp = "edgecvm.fleet.client_app:app"

[tool.flwr.app.config]
{config}
""")
    return app_dir


@dataclass(frozen=True)
class Tls:
    """Certificates for a TLS connection; None fields are not passed. ``insecure`` turns TLS off (a trusted LAN)."""

    insecure: bool = False
    ca_certfile: str | None = None  # the CA that signed the SuperLink's certificate (root certificates on a node)
    certfile: str | None = None  # the SuperLink's certificate and key
    keyfile: str | None = None


def superlink_command(address: str, tls: Tls, database: str | None = None, node_auth: bool = False) -> list[str]:
    """``flower-superlink`` serving on ``address`` (HOST:PORT) with ``tls``; with ``node_auth`` only nodes whose
    public key was registered (``register_command``) may join."""
    host, _, port = address.rpartition(":")
    cmd = [flower_program("flower-superlink"), "--host", host or "0.0.0.0", "--port", port,
           "--disable-runtime-dependency-installation"]
    if tls.insecure:
        cmd.append("--insecure")
    else:
        cmd += ["--ssl-ca-certfile", _need(tls.ca_certfile, "--ca-cert"),
                "--ssl-certfile", _need(tls.certfile, "--cert"),
                "--ssl-keyfile", _need(tls.keyfile, "--key")]
    if node_auth:
        cmd.append("--enable-supernode-auth")
    if database:
        cmd += ["--database", database]
    return cmd


def supernode_command(superlink: str, port: int, node_config: Mapping[str, str], tls: Tls,
                      auth_key: str | None = None, max_wait: float | None = None) -> list[str]:
    """``flower-supernode`` connecting to ``superlink``; its own Runtime API on 127.0.0.1:``port``; ``auth_key``
    its private key when the SuperLink lets in registered nodes only; ``max_wait`` seconds to keep trying."""
    config = " ".join(f"{key}={json.dumps(value)}" for key, value in node_config.items())
    cmd = [flower_program("flower-supernode"), "--superlink", superlink, "--port", str(port), "--node-config", config]
    if tls.insecure:
        cmd.append("--insecure")
    else:
        cmd += ["--root-certificates", _need(tls.ca_certfile, "--ca-cert")]
    if auth_key:
        cmd += ["--auth-supernode-private-key", auth_key]
    if max_wait is not None:
        cmd += ["--max-wait-time", str(max_wait)]
    return cmd


def write_connection(flwr_home: Path, superlink: str, tls: Tls) -> None:
    """The FLWR_HOME ``flwr run`` uses: one connection, ``CONNECTION``, to ``superlink``."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    lines = [f"[superlink.{CONNECTION}]", f"address = {json.dumps(superlink)}"]
    lines.append("insecure = true" if tls.insecure else
                 f"root-certificates = {json.dumps(str(Path(_need(tls.ca_certfile, '--ca-cert')).resolve()))}")
    (flwr_home / "config.toml").write_text("\n".join(lines) + "\n")


def run_command(app_dir: Path, run_config: Path, stream: bool = True) -> list[str]:
    """``flwr run`` of the app in ``app_dir`` on ``CONNECTION`` with the run config file ``run_config``."""
    cmd = [flower_program("flwr"), "run", str(app_dir), CONNECTION, "--run-config", str(run_config)]
    return cmd + (["--stream"] if stream else [])


def register_command(public_key: str, name: str | None = None) -> list[str]:
    """``flwr supernode register``: let the node with ``public_key`` (an OpenSSH ECDSA public key file) into
    ``CONNECTION``."""
    return [flower_program("flwr"), "supernode", "register", public_key, CONNECTION, *(["--name", name] if name else [])]


def write_run_config(path: Path, values: Mapping[str, object]) -> Path:
    unknown = sorted(set(values) - set(RUN_CONFIG))
    if unknown:
        raise EdgeCVMError(f"not run config keys of a fleet run: {', '.join(unknown)}")
    path.write_text("\n".join(f"{key} = {_toml_value(value)}" for key, value in values.items()) + "\n")
    return path


def _need(value: str | None, flag: str) -> str:
    if not value:
        raise EdgeCVMError(f"TLS needs {flag} (or --insecure on a trusted network)")
    return value
