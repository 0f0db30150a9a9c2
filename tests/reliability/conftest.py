"""Fixtures of the reliability suite: one bundle, a cheap device profile, a fixed probe set.

Every fault-injection run shares one bundle (the session's ``test_bundle``
when the suite provides it, else an export of its own) and a profile with a
small replay buffer and one thread, so checkpoints are cheap and two runs can
go side by side on two cores.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from harness import SAMPLES, DeviceParts
from PIL import Image

from edgecvm import resources
from edgecvm.device.profiles import learner_config, load_profile
from edgecvm.device.state import StateIdentity
from edgecvm.formats.anchors import load_anchors
from edgecvm.formats.bundle import load_bundle

ANCHORS = resources.anchors_file("tiny-imagenet-200.anchors.npz")


@pytest.fixture(scope="session")
def rel_bundle(request, tmp_path_factory) -> Path:
    try:
        return Path(request.getfixturevalue("test_bundle"))
    except pytest.FixtureLookupError:
        pass
    from edgecvm.offline.export import export_bundle

    out = tmp_path_factory.mktemp("reliability") / "bundle"
    export_bundle(resources.recipe("lite0-160.yaml"), ANCHORS, out, log=lambda _msg: None)
    return out


@pytest.fixture(scope="session")
def rel_profile(rel_bundle, tmp_path_factory) -> Path:
    """One thread, 256 kB of replay, checkpoint every 5 updates: cheap runs, frequent checkpoints."""
    profile = {
        "description": "reliability tests", "cpu_cores": 2, "threads": 1, "ram_mb": 24576, "memory_budget_mb": 400,
        "execution_providers": ["CPUExecutionProvider"], "resolution": load_bundle(rel_bundle).manifest.input_size,
        "precision": "fp32", "replay_bytes": 256_000, "batch_size": 8, "checkpoint_every": 5,
        "target_latency_ms": 50, "compute_gflops": 20,
    }
    path = tmp_path_factory.mktemp("profile") / "reliability.yaml"
    path.write_text(yaml.safe_dump(profile))
    return path


@pytest.fixture(scope="session")
def device_parts(rel_bundle, rel_profile) -> DeviceParts:
    from edgecvm.device.runtime import FeatureExtractor

    bundle = load_bundle(rel_bundle)
    profile = load_profile(str(rel_profile))
    images = [Image.open(sorted(folder.iterdir())[0]) for folder in sorted((SAMPLES / "val").iterdir())]
    probe = FeatureExtractor(bundle, profile).extract(images)
    return DeviceParts(bundle, profile, bundle.head_path, load_anchors(bundle.anchors_path),
                       StateIdentity.of_bundle(bundle), learner_config(profile), probe)
