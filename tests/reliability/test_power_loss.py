"""Power loss: `edgecvm learn` killed with SIGKILL at random moments, again and again on the same state dir.

Each trial restarts `learn` on the state the previous kill left (a device
rebooting after a power cut), lets it learn from the labelled built-in sample
for a random time, and kills it without warning, often in the middle of a
checkpoint write. ``--json`` reports every checkpoint (update counter and
sha256 of the file just written); the test keeps a copy of each reported file.
After every kill:

- ``state.npz`` verifies on its own (no fallback to ``.prev`` needed);
- its update counter is the last reported checkpoint's, or exactly one
  checkpoint interval newer (written, then killed before it was reported);
- the checkpoint it names is byte-identical to what was reported, and the
  learner resumed from the state dir predicts exactly (same concepts, same
  embeddings) what the learner resumed from the reported copy predicts;
- the next restart resumes from that counter, and removes the partial temp
  files earlier kills left (else repeated power cuts fill the SD card).

``EDGECVM_POWER_TRIALS`` sets the number of trials (20 in `make test`, more in
`make soak`); two chains of trials run side by side.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from harness import REPO, SAMPLES, DeviceParts, edgecvm_command

from edgecvm.device.state import STATE_FORMAT, STATE_VERSION, state_path
from edgecvm.formats.integrity import load_container, sha256_file

TRIALS = int(os.environ.get("EDGECVM_POWER_TRIALS", "20"))
CHAINS = 2
EVERY = 5  # --checkpoint-every: small, so many kills land in the middle of a checkpoint write
EARLY_KILLS = 0.2  # share of trials killed at a random moment of start-up / resume (0.1-1.5 s after launch)
KILL_WINDOW_S = (0.0, 1.5)  # the others: this long after the first checkpoint of the run, whatever the machine's speed


@dataclass(frozen=True)
class Reported:
    updates: int
    sha256: str
    copy: Path | None  # a state dir holding the reported file, when the copy raced no newer write


@dataclass
class Chain:
    folder: Path
    rng: random.Random
    last: Reported | None = None
    kills_mid_write: int = 0
    kills_before_first_checkpoint: int = 0
    checkpoints_reported: int = 0
    log: list[str] = field(default_factory=list)


def _copy_reported(state_dir: Path, snapshots: Path, line: dict) -> Reported:
    """Copy the file a checkpoint line describes; the copy counts only if its sha256 is the reported one."""
    target = snapshots / line["sha256"]
    target.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copyfile(state_path(state_dir), state_path(target))
    except FileNotFoundError:
        return Reported(line["updates"], line["sha256"], None)
    ok = sha256_file(state_path(target)) == line["sha256"]
    return Reported(line["updates"], line["sha256"], target if ok else None)


def _saved_updates(path: Path) -> int:
    _arrays, meta = load_container(path, STATE_FORMAT, (STATE_VERSION,), "fix")
    return int(meta["counters"]["updates"])


def _same_predictions(parts: DeviceParts, state_dir: Path, reported_copy: Path) -> None:
    resumed, expected = parts.load(state_dir), parts.load(reported_copy)
    assert [p.concept for p in resumed.predict_features(parts.probe)] == \
        [p.concept for p in expected.predict_features(parts.probe)]
    np.testing.assert_array_equal(resumed.method.embed(parts.probe), expected.method.embed(parts.probe))


def _trial(chain: Chain, parts: DeviceParts, bundle: Path, profile: Path, seed: int) -> None:
    state_dir, snapshots = chain.folder / "state", chain.folder / "snapshots"
    resumed_from = chain.last.updates if chain.last else 0
    proc = subprocess.Popen(
        edgecvm_command("learn", "--bundle", bundle, "--stream", SAMPLES / "train", "--state", state_dir,
                        "--profile", profile, "--checkpoint-every", EVERY, "--shuffle", seed, "--json"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )
    lines: list[dict] = []
    stderr: list[str] = []
    first_checkpoint = threading.Event()

    def read_stdout() -> None:
        for raw in proc.stdout:  # type: ignore[union-attr]
            line = json.loads(raw)
            if line.get("event") == "checkpoint":
                lines.append(line)
                chain.last = _copy_reported(state_dir, snapshots, line)
                first_checkpoint.set()

    readers = [threading.Thread(target=read_stdout),
               threading.Thread(target=lambda: stderr.extend(proc.stderr))]  # type: ignore[arg-type]
    for reader in readers:
        reader.start()
    if chain.rng.random() < EARLY_KILLS:
        time.sleep(chain.rng.uniform(0.1, 1.5))
    else:
        assert first_checkpoint.wait(timeout=120), "learn reported no checkpoint"
        time.sleep(chain.rng.uniform(*KILL_WINDOW_S))
    proc.kill()
    proc.wait()
    for reader in readers:
        reader.join()
    assert proc.returncode == -9, f"learn ended by itself before the kill: rc {proc.returncode}\n{''.join(stderr)}"
    assert "Traceback" not in "".join(stderr), "".join(stderr)

    chain.checkpoints_reported += len(lines)
    chain.kills_before_first_checkpoint += not lines
    leftovers = sorted(p.name for p in state_dir.glob("*.tmp")) if state_dir.exists() else []
    chain.kills_mid_write += bool(leftovers)
    if lines:  # a restart clears what earlier kills left half-written: repeated power cuts must not fill the card
        assert len(leftovers) <= 2, leftovers  # at most this kill's own checkpoint temp and .prev temp
    if lines:  # the restart resumed from where the previous kill left the state
        assert lines[0]["updates"] == resumed_from + EVERY, (lines[0], resumed_from)
    if chain.last is None:
        return  # killed before the first checkpoint ever: nothing to lose yet

    latest = state_path(state_dir)
    on_disk = _saved_updates(latest)  # verifies the checksum of the latest file itself
    last = chain.last
    chain.log.append(f"seed {seed}: reported {last.updates}, on disk {on_disk}, leftovers {leftovers}")
    assert on_disk in (last.updates, last.updates + EVERY), chain.log[-1]
    reported_file = latest if on_disk == last.updates else latest.with_name("state.npz.prev")
    assert sha256_file(reported_file) == last.sha256, chain.log[-1]
    if last.copy is not None and on_disk == last.updates:
        _same_predictions(parts, state_dir, last.copy)
    if on_disk != last.updates:  # the next restart resumes from the newer, unreported checkpoint
        chain.last = Reported(on_disk, sha256_file(latest), None)


def test_sigkill_at_random_moments_loses_at_most_one_checkpoint_interval(
    rel_bundle, rel_profile, device_parts, tmp_path
):
    chains = [Chain(tmp_path / f"chain{i}", random.Random(1000 + i)) for i in range(CHAINS)]

    def run_chain(index: int) -> None:
        chain = chains[index]
        for trial in range(index, TRIALS, CHAINS):
            _trial(chain, device_parts, rel_bundle, rel_profile, seed=trial)

    with ThreadPoolExecutor(CHAINS) as pool:
        list(pool.map(run_chain, range(CHAINS)))

    reported = sum(c.checkpoints_reported for c in chains)
    mid_write = sum(c.kills_mid_write for c in chains)
    early = sum(c.kills_before_first_checkpoint for c in chains)
    print(f"\npower loss: {TRIALS} SIGKILL trials, {reported} checkpoints reported, "
          f"{mid_write} kills left a partial temp file (killed mid-write), {early} before a first checkpoint")
    assert TRIALS - early >= TRIALS * (1 - EARLY_KILLS) / 2  # most kills really interrupted learning
