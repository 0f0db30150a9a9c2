"""The learn loop with a label per frame and answers between updates (what a server showing the camera runs)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from edgecvm.device.device import open_device
from edgecvm.device.learn_loop import LearnLoop
from edgecvm.device.streams import open_stream
from edgecvm.errors import BadInputError


def test_frames_labelled_none_are_only_predicted(test_bundle: Path, samples_dir: Path, tmp_path: Path):
    device = open_device(test_bundle, state=tmp_path / "state")
    lock = threading.Lock()
    answers: list[tuple[str, str, bool]] = []
    with open_stream(str(samples_dir / "train"), limit=30, shuffle=0) as stream:
        loop = LearnLoop(device, stream, label_for=lambda frame: "goldfish" if frame.label == "goldfish" else None,
                         on_prediction=lambda frame, p: answers.append((frame.origin, p.concept, lock.locked())),
                         top_k=3, lock=lock)
        loop.run()
        loop.finish()
    goldfish = sum(1 for name in stream.items if name.label == "goldfish")
    assert goldfish > 0 and device.learner.counters.per_concept == {"goldfish": goldfish}
    assert device.known == ["goldfish"]
    assert answers and all(held for _, _, held in answers)  # answers are computed under the shared lock
    origins = [origin for origin, _, _ in answers]
    assert origins == sorted(origins, key=[item.origin for item in stream.items].index)  # in stream order
    assert loop.summary()["updates"] == goldfish


def test_a_fixed_label_and_a_label_per_frame_exclude_each_other(test_bundle: Path, samples_dir: Path, tmp_path: Path):
    device = open_device(test_bundle, state=tmp_path / "state")
    with open_stream(str(samples_dir / "train"), limit=2) as stream, pytest.raises(BadInputError, match="not both"):
        LearnLoop(device, stream, "goldfish", label_for=lambda frame: None)


def test_an_unlabelled_stream_may_be_labelled_per_frame(test_bundle: Path, samples_dir: Path, tmp_path: Path):
    image = next((samples_dir / "val" / "lemon").iterdir())
    device = open_device(test_bundle, state=tmp_path / "state")
    with open_stream(str(image)) as stream:
        with pytest.raises(BadInputError, match="unlabelled"):
            LearnLoop(device, stream)
        loop = LearnLoop(device, stream, label_for=lambda frame: "lemon")
        loop.run()
        loop.finish()
    assert device.known == ["lemon"] and loop.checkpointer.written == 1
