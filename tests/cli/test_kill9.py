"""SIGKILL of `edgecvm learn` at a random moment, then a restart: nothing older than one checkpoint interval is lost.

Each trial kills the process a random time after it reported a random number
of checkpoints on its ``--json`` stream (so some kills land mid-write), checks
the state dir loads with its checksum and holds at least the last reported
update count and at most one interval more, then restarts `learn` on the
same dir to show it resumes from exactly that count. The longer, 20-trial
version with prediction checks is tests/reliability/test_power_loss.py.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from pathlib import Path

from device_cli import REPO, edgecvm_command, run_subprocess, saved_updates, write_profile

from edgecvm.device.state import StateIdentity, load_state
from edgecvm.formats.anchors import load_anchors
from edgecvm.formats.bundle import load_bundle
from edgecvm.formats.head_file import load_head

EVERY = 5
TRIALS = 5


def learn_until_killed(bundle: Path, stream: Path, state: Path, profile: Path, rng: random.Random) -> int:
    """Start learn, SIGKILL it after some checkpoints (plus a random delay); the last reported update count."""
    proc = subprocess.Popen(
        edgecvm_command("learn", "--bundle", bundle, "--stream", stream, "--state", state, "--profile", profile,
                        "--checkpoint-every", EVERY, "--shuffle", rng.randrange(1000), "--json"),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO)
    try:
        wanted = rng.randint(1, 4)
        reported = []
        for line in proc.stdout:
            record = json.loads(line)
            assert record["event"] == "checkpoint", f"learn finished before the kill: {record}"
            reported.append(record["updates"])
            if len(reported) == wanted:
                break
        time.sleep(rng.uniform(0.0, 0.25))  # often lands inside the next update or checkpoint write
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        # Checkpoints written during the sleep were reported after the loop stopped reading.
        reported += [json.loads(line)["updates"] for line in proc.stdout if line.strip()]
    finally:
        proc.kill()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    return reported[-1]


def test_sigkill_loses_at_most_one_checkpoint_interval(tmp_path: Path, test_bundle: Path, samples_dir: Path) -> None:
    profile = write_profile(tmp_path)
    state = tmp_path / "state"
    bundle = load_bundle(test_bundle)
    rng = random.Random(20261123)
    for trial in range(TRIALS):
        last_reported = learn_until_killed(test_bundle, samples_dir / "train", state, profile, rng)
        on_disk = saved_updates(state)
        assert last_reported <= on_disk <= last_reported + EVERY, (trial, last_reported, on_disk)
        learner = load_state(state, load_head(bundle.head_path), load_anchors(bundle.anchors_path),
                             StateIdentity.of_bundle(bundle))
        assert learner.counters.updates == on_disk and learner.known
        # A kill inside a write may leave its temp file (the new state's, or the hard link that becomes .prev);
        # only state.npz(.prev) are ever read, and the next learn removes them (integrity.remove_stale_temps).
        others = [p.name for p in state.iterdir() if p.name not in ("state.npz", "state.npz.prev")]
        assert all((name.startswith(".state.npz.") and name.endswith(".tmp")) or name == "state.npz.prev.tmp"
                   for name in others), others

    resumed = run_subprocess("learn", "--bundle", test_bundle, "--stream", samples_dir / "val", "--state", state,
                             "--profile", profile, "--limit", 3, "--json")
    assert resumed.code == 0, resumed.stderr
    assert resumed.summary["updates_total"] == on_disk + 3
    assert not [p.name for p in state.iterdir() if p.name.endswith(".tmp")]  # what the kills left is gone

