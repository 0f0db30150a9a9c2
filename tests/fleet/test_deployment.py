"""A fleet on localhost as real processes, through the `edgecvm fleet` commands: a SuperLink with TLS (certificates
made here) letting in registered nodes only, three registered SuperNodes on three devices' state dirs, one of
which sends forged statistics, a fourth node nobody registered, and a round.

The stranger never takes part, the forged update is refused naming its node, the two others take each other's
concepts, and when the commands are stopped every process they started (Flower starts some in sessions of their
own) is gone. Skipped without flwr.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from synthetic_data import Clusters

pytest.importorskip("flwr")
x509 = pytest.importorskip("cryptography.x509")

from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from edgecvm.device.state import StateIdentity, load_state, save_state  # noqa: E402
from edgecvm.fleet.processes import alive, stop_tree, tree  # noqa: E402
from edgecvm.formats.bundle import load_bundle, load_head_and_anchors  # noqa: E402
from edgecvm.learning.fleet import own_statistics  # noqa: E402
from edgecvm.learning.learner import Learner, LearnerConfig  # noqa: E402

pytestmark = pytest.mark.slow


def _certificates(folder: Path) -> dict[str, Path]:
    """A CA and a certificate for localhost / 127.0.0.1 signed by it."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgecvm test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    server = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
              .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
              .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                          x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                             critical=False).sign(ca_key, hashes.SHA256()))
    files = {"ca": folder / "ca.crt", "cert": folder / "server.pem", "key": folder / "server.key"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files["cert"].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    files["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return files


def _node_key(path: Path) -> Path:
    """An ECDSA P-384 key pair in OpenSSH form, as ssh-keygen makes it: ``path`` and ``path``.pub."""
    key = ec.generate_private_key(ec.SECP384R1())
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                       serialization.NoEncryption()))
    path.with_name(path.name + ".pub").write_bytes(
        key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))
    return path


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_a_tls_fleet_on_localhost_refuses_the_forged_node(tmp_path: Path, test_bundle: Path):
    head, anchors = load_head_and_anchors(load_bundle(str(test_bundle)))
    identity = StateIdentity.of_bundle(load_bundle(str(test_bundle)))
    names = list(anchors.names[:6])
    clusters = Clusters(6, head.feature_dim, seed=0)
    lessons = {"a": [0, 1], "b": [2, 3], "forged": [4, 5]}
    for device, concepts in lessons.items():
        learner = Learner(head, anchors, LearnerConfig(method="lda"))
        labels = np.repeat(concepts, 12)
        learner.observe_features(clusters.draw(labels), [names[i] for i in labels])
        if device == "forged":
            learner.method.stats.sums *= 1e12  # means no feature can have: a poisoned update
        save_state(tmp_path / device, learner, identity)

    tls = _certificates(tmp_path)
    link, *node_ports = _free_ports(5)
    keys = {device: _node_key(tmp_path / f"{device}-key") for device in [*lessons, "stranger"]}
    env = {**os.environ, "FLWR_HOME": str(tmp_path / "flwr-home")}
    cli = [sys.executable, "-m", "edgecvm", "fleet"]
    started: list[subprocess.Popen] = []

    def start(*args: str, log: str) -> None:
        out = open(tmp_path / log, "wb")  # noqa: SIM115 - the process's log, closed with the test's tmp_path
        started.append(subprocess.Popen([*cli, *args], env=env, stdout=out, stderr=subprocess.STDOUT))

    swept: set[int] = set()
    try:
        start("server", "--address", f"127.0.0.1:{link}", "--ca-cert", str(tls["ca"]), "--cert", str(tls["cert"]),
              "--key", str(tls["key"]), "--node-auth", log="server.log")
        for device in lessons:  # registered once the SuperLink answers
            register = [*cli, "register", f"{keys[device]}.pub", "--name", device, "--superlink", f"127.0.0.1:{link}",
                        "--ca-cert", str(tls["ca"])]
            for _ in range(60):
                done = subprocess.run(register, env=env, capture_output=True, text=True, timeout=60)
                if done.returncode == 0 or "Connection" not in done.stderr:
                    break
                time.sleep(0.5)
            assert done.returncode == 0, done.stderr
        for device, port in zip([*lessons, "stranger"], node_ports, strict=True):
            state = tmp_path / ("a" if device == "stranger" else device)
            start("join", "--state", str(state), "--bundle", str(test_bundle), "--superlink", f"127.0.0.1:{link}",
                  "--ca-cert", str(tls["ca"]), "--port", str(port), "--max-wait", "120", "--auth-key",
                  str(keys[device]), log=f"{device}.log")
        run = subprocess.run([*cli, "round", "--superlink", f"127.0.0.1:{link}", "--ca-cert", str(tls["ca"]),
                              "--bundle", str(test_bundle), "--min-nodes", "3", "--timeout", "120", "--json"],
                             env=env, capture_output=True, text=True, timeout=300)
        for p in started:  # every process below the commands, read while the tree is whole
            swept.update(tree(p.pid))
    finally:
        for p in started:
            p.send_signal(signal.SIGTERM)  # the command stops what it started
        for p in started:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                stop_tree(p.pid)
                p.wait()
    logs = "\n".join(f"== {f.name}\n{f.read_text(errors='replace')[-2000:]}" for f in tmp_path.glob("*.log"))
    assert run.returncode == 0, run.stderr[-3000:] + logs
    (result,) = [json.loads(line) for line in run.stdout.splitlines()]
    assert len(result["accepted"]) == 2 and len(result["adopted"]) == 2 and result["nodes"] == 3
    ((node, why),) = result["refused"].items()
    assert node in why and "absurdly large" in why
    for device in ("a", "b"):
        learner = load_state(tmp_path / device, head, anchors, identity)
        assert set(learner.known) == {names[i] for i in lessons["a"] + lessons["b"]}
        assert own_statistics(learner).n == 24 and learner.method.stats.n == 48
    assert len(swept) > 3 * 2 and not [pid for pid in swept if alive(pid)]
