"""`edgecvm fleet`: what cannot work is one line naming the problem and a non-zero exit, before or instead of
starting Flower (the commands working end to end: tests/fleet/test_deployment.py)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from device_cli import run_cli

from edgecvm.cli.fleet import round_results
from edgecvm.errors import EdgeCVMError
from edgecvm.fleet.launch import ROUND_RESULT_PREFIX

pytest.importorskip("flwr")


def test_help_explains_each_action(capsys):
    for action in ("server", "join", "register", "round"):
        with pytest.raises(SystemExit):
            run_cli(capsys, "fleet", action, "--help")
        assert "example: edgecvm fleet" in capsys.readouterr().out


def test_what_cannot_work_is_one_line(capsys, tmp_path: Path, test_bundle: Path):
    cases = [(("server", "--address", "127.0.0.1:1"), "TLS needs --ca-cert"),
             (("join", "--state", tmp_path, "--bundle", test_bundle, "--superlink", "127.0.0.1:1", "--insecure"),
              "no learner state"),
             (("register", tmp_path / "none.pub", "--insecure"), "no such public key file"),
             (("round", "--superlink", "127.0.0.1:1", "--ca-cert", tmp_path / "ca.crt", "--bundle", tmp_path),
              "is not a bundle")]
    for args, why in cases:
        run = run_cli(capsys, "fleet", *args)
        assert run.code == 2 and why in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr


def test_a_round_that_never_ran_is_an_error(capsys, tmp_path: Path, test_bundle: Path):
    run = run_cli(capsys, "fleet", "round", "--superlink", "127.0.0.1:1", "--insecure", "--bundle", test_bundle)
    assert run.code == 2 and "the fleet run did not finish" in run.stderr.splitlines()[-1]


def _result(number: int, accepted: list[str]) -> dict:
    return {"round": number, "nodes": 2, "accepted": accepted, "refused": {}, "dropped": [], "adopted": accepted,
            "declined": {}, "samples": 24, "concepts": 4, "upload_bytes": 1000, "seconds": 1.5}


def test_round_results_are_read_from_the_relayed_log_and_the_rest_is_progress():
    log = ["Successfully started run 1\n", "\x1b[92mINFO \x1b[0m:      Start `flwr-serverapp` process\n",
           ROUND_RESULT_PREFIX + json.dumps(_result(1, ["node 7"])) + "\n",
           "node 9: refused its class statistics: its values are absurdly large\n",
           ROUND_RESULT_PREFIX + json.dumps(_result(2, [])) + "\n"]
    progress = io.StringIO()
    assert round_results(log, progress) == [_result(1, ["node 7"]), _result(2, [])]
    assert progress.getvalue() == log[0] + log[1] + log[3]


@pytest.mark.parametrize(("line", "why"), [
    (ROUND_RESULT_PREFIX + '{"round": 1, "nodes": 2, "acc', "is not JSON"),
    (ROUND_RESULT_PREFIX + json.dumps({"round": 1, "nodes": 2}), "without accepted, adopted, concepts, declined"),
    (ROUND_RESULT_PREFIX + "[1, 2]", "without accepted"),
])
def test_a_garbled_round_result_is_an_error_quoting_it(line: str, why: str):
    with pytest.raises(EdgeCVMError, match=why) as raised:
        round_results([line + "\n"], io.StringIO())
    assert line[len(ROUND_RESULT_PREFIX):][:20] in str(raised.value)
