"""`edgecvm fleet server | join | round`: fleet learning on Flower, by commands a device owner can type.

``server`` runs Flower's SuperLink on the workstation, ``join`` a SuperNode on
each device (its ClientApp reads and writes the device's state dir), and
``round`` starts a run: every node's own statistics summed, the total sent
back (edgecvm/fleet). Each wraps a Flower program started offline
(fleet/launch.py) in a session of its own, stopped with everything it started
when the command is interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from edgecvm.cli.common import DEFAULT_PROFILE, positive_int
from edgecvm.errors import EdgeCVMError

if TYPE_CHECKING:  # the fleet package is imported when a command runs, not for --help
    from edgecvm.fleet.launch import Tls

_TLS_EPILOG = ("TLS is the default: the SuperLink needs a certificate and key signed by a CA whose certificate every "
               "node and `fleet round` get (--ca-cert); --insecure turns it off (a trusted LAN, or a test).")


def _tls(args: argparse.Namespace, server: bool = False) -> Tls:
    from edgecvm.fleet.launch import Tls

    if args.insecure:
        return Tls(insecure=True)
    return Tls(ca_certfile=args.ca_cert, certfile=getattr(args, "cert", None) if server else None,
               keyfile=getattr(args, "key", None) if server else None)


def _run_foreground(cmd: list[str], what: str) -> int:
    """Run a long-lived Flower program, offline (fleet/launch.py), until it ends or this command is interrupted
    (Ctrl-C, or SIGTERM from a service manager); then stop every process it started, by PID."""
    from edgecvm.fleet.launch import offline_env
    from edgecvm.fleet.processes import alive, stop_tree, tree

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    with tempfile.TemporaryDirectory(prefix="edgecvm-ray-", dir="/tmp") as ray_tmp:  # Ray's socket path: short
        proc = subprocess.Popen(cmd, env=offline_env(os.environ, ray_tmpdir=ray_tmp), start_new_session=True)
        print(f"edgecvm: {what} (pid {proc.pid}); Ctrl-C stops it", file=sys.stderr)
        previous = signal.signal(signal.SIGTERM, interrupt)
        started: set[int] = set()
        try:
            while True:
                started.update(tree(proc.pid))  # known while their parent lives: Flower starts some in own sessions
                try:
                    return proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    continue
        finally:
            signal.signal(signal.SIGTERM, previous)
            stop_tree(proc.pid)
            proc.wait()
            for pid in started - {proc.pid}:
                if alive(pid):
                    stop_tree(pid)


def cmd_server(args: argparse.Namespace) -> int:
    from edgecvm.fleet.launch import superlink_command

    cmd = superlink_command(args.address, _tls(args, server=True), database=args.database, node_auth=args.node_auth)
    mode = "insecure" if args.insecure else "TLS"
    return _run_foreground(cmd, f"SuperLink on {args.address} ({mode})")


def cmd_join(args: argparse.Namespace) -> int:
    from edgecvm.fleet.launch import supernode_command
    from edgecvm.fleet.node import DeviceNode

    state = Path(args.state).resolve()
    DeviceNode(state, args.bundle, args.profile).share()  # refuse a state that cannot take part, before connecting
    node_config = {"state-dir": str(state), "bundle": str(Path(args.bundle).resolve()), "profile": args.profile}
    cmd = supernode_command(args.superlink, args.port, node_config, _tls(args), auth_key=args.auth_key,
                            max_wait=args.max_wait)
    return _run_foreground(cmd, f"SuperNode for {state}, connecting to {args.superlink}")


def _flwr_env(args: argparse.Namespace, home: Path) -> dict[str, str]:
    """A FLWR_HOME of our own holding one connection to ``args.superlink``: never the user's ~/.flwr, never Flower's
    detached local SuperLink."""
    from edgecvm.fleet.launch import offline_env, write_connection

    write_connection(home, args.superlink, _tls(args))
    return offline_env(os.environ, flwr_home=str(home))


def cmd_register(args: argparse.Namespace) -> int:
    from edgecvm.fleet.launch import register_command

    if not Path(args.public_key).is_file():
        raise EdgeCVMError(f"{args.public_key}: no such public key file")
    with tempfile.TemporaryDirectory(prefix="edgecvm-fleet-") as tmp:
        done = subprocess.run(register_command(args.public_key, args.name), env=_flwr_env(args, Path(tmp)),
                              capture_output=True, text=True)
    if done.returncode:
        lines = [ln.strip(" │╭╮╰╯─") for ln in (done.stdout + done.stderr).splitlines()]
        raise EdgeCVMError(f"the SuperLink did not register {args.public_key}: {' '.join(ln for ln in lines if ln)}")
    print(f"{args.public_key}: registered")
    return 0


def cmd_round(args: argparse.Namespace) -> int:
    from edgecvm.fleet.launch import run_command, write_app, write_run_config
    from edgecvm.formats.bundle import load_bundle, load_head_and_anchors

    bundle = load_bundle(str(args.bundle))
    head, _ = load_head_and_anchors(bundle)
    with tempfile.TemporaryDirectory(prefix="edgecvm-fleet-") as tmp:
        env = _flwr_env(args, Path(tmp) / "flwr-home")
        app = write_app(Path(tmp) / "app")
        config = write_run_config(Path(tmp) / "run.toml", {
            "rounds": args.rounds, "min-nodes": args.min_nodes, "wait": args.wait, "timeout": args.timeout,
            "dtype": args.dtype, "bundle-sha256": bundle.sha256, "anchors-sha256": bundle.manifest.anchors_sha256,
            "feature-dim": head.feature_dim})
        with subprocess.Popen(run_command(app, config), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, errors="replace") as flwr:
            rounds = round_results(flwr.stdout, progress=sys.stderr)
    if len(rounds) < args.rounds:  # `flwr run --stream` exits 0 even when the run failed
        raise EdgeCVMError(f"the fleet run did not finish: {len(rounds)} of {args.rounds} round(s) reported (flwr exit "
                           f"code {flwr.returncode}; the log above and the SuperLink's say why)")
    for r in rounds:
        if args.json:
            print(json.dumps(r))
        else:
            print(f"round {r['round']}: {len(r['accepted'])} of {r['nodes']} nodes added ({r['samples']:,} samples, "
                  f"{r['concepts']} concepts); {len(r['adopted'])} adopted the total; refused "
                  f"{len(r['refused'])}, no answer {len(r['dropped'])}, declined {len(r['declined'])}")
            for node, why in {**r["refused"], **r["declined"]}.items():
                print(f"  {node}: {why}")
    return 0 if all(r["accepted"] for r in rounds) else 1


_RESULT_KEYS = {"round", "nodes", "accepted", "refused", "dropped", "adopted", "declined", "samples", "concepts"}


def round_results(log: Iterable[str], progress: TextIO) -> list[dict[str, Any]]:
    """The rounds' results in a fleet run's log as ``flwr run --stream`` relays it (cli/fleet_server_app.py prints
    them); every other line goes to ``progress``."""
    from edgecvm.fleet.launch import ROUND_RESULT_PREFIX

    rounds = []
    for line in log:
        at = line.find(ROUND_RESULT_PREFIX)
        if at < 0:
            print(line, end="", file=progress)
            continue
        text = line[at + len(ROUND_RESULT_PREFIX):]
        try:
            result = json.loads(text)
        except json.JSONDecodeError as exc:
            raise EdgeCVMError(f"the fleet run reported a round result that is not JSON ({exc}): "
                               f"{text[:200]!r}") from exc
        missing = _RESULT_KEYS - result.keys() if isinstance(result, dict) else _RESULT_KEYS
        if missing:
            raise EdgeCVMError(f"the fleet run reported a round result without {', '.join(sorted(missing))}: "
                               f"{text[:200]!r}")
        rounds.append(result)
    return rounds


def _add_tls(parser: argparse.ArgumentParser, server: bool = False) -> None:
    parser.add_argument("--insecure", action="store_true", help="no TLS (a trusted network, or a test)")
    parser.add_argument("--ca-cert", metavar="FILE",
                        help="the CA certificate that signed the SuperLink's certificate" +
                        (" (Flower's --ssl-ca-certfile)" if server else " (Flower's --root-certificates)"))
    if server:
        parser.add_argument("--cert", metavar="FILE", help="the SuperLink's certificate (Flower's --ssl-certfile)")
        parser.add_argument("--key", metavar="FILE", help="its private key (Flower's --ssl-keyfile)")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "fleet", help="fleet learning on Flower: what one device learns, every device knows",
        description="Fleet learning on Flower (pip install 'edgecvm[fleet]'): a SuperLink on a workstation "
        "(`fleet server`), a SuperNode on each device (`fleet join`), and rounds (`fleet round`) in which every "
        "device sends the class statistics it was taught itself (lda head), the server sums them and every device "
        "solves its head from the total, exactly as one learner taught everything. Devices keep learning between "
        "rounds; a round never counts a sample twice. Flower runs offline: no dependency installation, update "
        "check or telemetry. See docs/deploy.md, section 5.", epilog=_TLS_EPILOG)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    server = actions.add_parser("server", help="run the fleet's SuperLink (on the workstation)",
                                description="Run Flower's SuperLink, which nodes join and rounds run on, until "
                                "interrupted.", epilog="example: edgecvm fleet server --address 0.0.0.0:9092 "
                                "--ca-cert ca.crt --cert server.pem --key server.key")
    server.add_argument("--address", default="0.0.0.0:9092", metavar="HOST:PORT",
                        help="where nodes and `fleet round` reach it (default 0.0.0.0:9092)")
    _add_tls(server, server=True)
    server.add_argument("--node-auth", action="store_true",
                        help="only nodes whose public key was registered (`fleet register`) may join (needs TLS)")
    server.add_argument("--database", metavar="FILE", help="keep the SuperLink's state in this file (default: memory)")
    server.set_defaults(func=cmd_server)

    join = actions.add_parser("join", help="run a SuperNode for this device's state dir (on the device)",
                              description="Run Flower's SuperNode for a device: in each round it sends the state "
                              "dir's own statistics and saves the head solved from the fleet's total (atomically, "
                              "the previous checkpoint kept). Stop the device's learning service while a round "
                              "runs: a state that changed since it was sent does not take the total that round.",
                              epilog="example: edgecvm fleet join --state /var/lib/edgecvm/state --bundle bundle "
                              "--superlink workstation:9092 --ca-cert ca.crt")
    join.add_argument("--state", required=True, metavar="DIR", help="the device's state dir")
    join.add_argument("--bundle", required=True, help="the bundle the state was learned with")
    join.add_argument("--profile", default=DEFAULT_PROFILE, help=f"the device's profile (default {DEFAULT_PROFILE})")
    join.add_argument("--superlink", required=True, metavar="HOST:PORT", help="the fleet server's address")
    _add_tls(join)
    join.add_argument("--port", type=positive_int, default=9094,
                      help="local port of the SuperNode's own API (default 9094)")
    join.add_argument("--auth-key", metavar="FILE",
                      help="this node's private key, when the server lets in registered nodes only (`fleet register`)")
    join.add_argument("--max-wait", type=float, metavar="S",
                      help="give up connecting after S seconds (default: keep trying)")
    join.set_defaults(func=cmd_join)

    register_ = actions.add_parser(
        "register", help="let a node in (a SuperLink started with --node-auth)",
        description="Register a device's public key with the SuperLink (Flower's `flwr supernode register`); the "
        "device joins with the matching private key (`fleet join --auth-key`). Make the pair on the device: "
        "ssh-keygen -t ecdsa -b 384 -N '' -f node-key (node-key is the private key, node-key.pub the public one).",
        epilog="example: edgecvm fleet register node-key.pub --name barn1 --ca-cert ca.crt")
    register_.add_argument("public_key", metavar="PUBLIC_KEY", help="the node's public key file (OpenSSH ECDSA)")
    register_.add_argument("--name", help="a name for the node")
    register_.add_argument("--superlink", default="127.0.0.1:9092", metavar="HOST:PORT",
                           help="the SuperLink (default 127.0.0.1:9092)")
    _add_tls(register_)
    register_.set_defaults(func=cmd_register)

    round_ = actions.add_parser("round", help="run fleet rounds (from any machine that reaches the SuperLink)",
                                description="Start a run on the SuperLink: every node sends its own statistics, "
                                "the server adds them as they arrive (a bad update or a silent node is named and left "
                                "out, the round goes on) and sends the total back. Each round's result comes back "
                                "with the run's log, so this runs on the workstation or any machine that reaches the "
                                "SuperLink. Exit code 1 when a round added nothing.",
                                epilog="example: edgecvm fleet round --superlink 127.0.0.1:9092 --ca-cert ca.crt "
                                "--bundle bundle --min-nodes 3")
    round_.add_argument("--superlink", default="127.0.0.1:9092", metavar="HOST:PORT",
                        help="the SuperLink (default 127.0.0.1:9092)")
    _add_tls(round_)
    round_.add_argument("--bundle", required=True, help="the fleet's bundle: updates from another one are refused")
    round_.add_argument("--rounds", type=positive_int, default=1, help="rounds in this run (default 1)")
    round_.add_argument("--min-nodes", type=positive_int, default=2,
                        help="wait for this many connected nodes before the first round (default 2)")
    round_.add_argument("--wait", type=float, default=120.0, metavar="S",
                        help="wait at most S seconds for them (default 120)")
    round_.add_argument("--timeout", type=float, default=300.0, metavar="S",
                        help="a round waits at most S seconds for replies (default 300)")
    round_.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                        help="what nodes send their statistics in (float16: half the bytes; default float32)")
    round_.add_argument("--json", action="store_true", help="print one JSON object per round")
    round_.set_defaults(func=cmd_round)

