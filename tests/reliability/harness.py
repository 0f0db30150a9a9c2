"""Shared by the reliability tests that run the real device side: its parts, and the command itself."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecvm import resources
from edgecvm.device.profiles import DeviceProfile
from edgecvm.device.state import StateIdentity, load_state
from edgecvm.formats.anchors import AnchorSet
from edgecvm.formats.bundle import Bundle
from edgecvm.formats.head_file import HeadParams, load_head
from edgecvm.learning.learner import Learner, LearnerConfig

REPO = Path(__file__).resolve().parents[2]
SAMPLES = resources.sample_dir()


@dataclass(frozen=True)
class DeviceParts:
    """What a test needs to rebuild, in-process, the learner a `learn` run checkpointed."""

    bundle: Bundle
    profile: DeviceProfile
    head_path: Path
    anchors: AnchorSet
    identity: StateIdentity
    config: LearnerConfig
    probe: np.ndarray  # backbone features of one val image per concept

    def head(self) -> HeadParams:
        return load_head(self.head_path)  # fresh arrays each time: a learner trains its head in place

    def load(self, state_dir: str | os.PathLike[str]) -> Learner:
        """The learner a state dir resumes, exactly as `learn` / `predict` rebuild it."""
        return load_state(state_dir, self.head(), self.anchors, self.identity, self.config)


def edgecvm_command(*args: str | os.PathLike[str]) -> list[str]:
    return [sys.executable, "-m", "edgecvm", *map(str, args)]


def run_edgecvm(*args: str | os.PathLike[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the real command in a subprocess (so a traceback would show on its stderr)."""
    return subprocess.run(edgecvm_command(*args), capture_output=True, text=True, cwd=REPO, timeout=timeout)
