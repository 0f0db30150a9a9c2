"""`edgecvm fleet`: what cannot work is one line naming the problem and a non-zero exit, before or instead of
starting Flower (the commands working end to end: tests/fleet/test_deployment.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from device_cli import run_cli

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
