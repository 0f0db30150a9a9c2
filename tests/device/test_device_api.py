"""The Python API a program uses: open a bundle on a profile with a state dir, teach, predict, checkpoint, close."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fake_opencv import FakeOpenCV
from PIL import Image

import edgecvm
from edgecvm.device.device import STALE_FRAME_S
from edgecvm.device.state import state_path


def _images(samples_dir: Path, concept: str, split: str = "train") -> list[Path]:
    return sorted((samples_dir / split / concept).glob("*.JPEG"))


def test_teach_predict_checkpoint_close_and_resume(tmp_path: Path, test_bundle: Path, samples_dir: Path) -> None:
    state = tmp_path / "state"
    concepts = ("goldfish", "school bus", "lemon")
    with edgecvm.open_device(test_bundle, profile="host", state=state) as device:
        assert device.known == [] and device.default_vocab == "all"
        for concept in concepts:
            for path in _images(samples_dir, concept)[:15]:
                result = device.teach(path, concept)
                assert not result.skipped
        assert device.known == list(concepts)
        hits = [device.predict(path).concept == concept for concept in concepts
                for path in _images(samples_dir, concept, "val")]
        prediction = device.predict(Image.open(_images(samples_dir, "lemon", "val")[0]), top_k=3)
        assert len(prediction.top_k) == 3 and prediction.top_k[0][1] == prediction.score
        # the nearest taught concept, or "unknown" when the open-set score is under the calibrated threshold
        assert prediction.concept == ("unknown" if prediction.unknown else prediction.top_k[0][0])
        assert {name for name, _ in prediction.top_k} <= set(concepts)  # vocabulary: the taught concepts
    assert sum(hits) / len(hits) > 0.8  # three classes: chance is a third
    assert state_path(state).is_file()  # closing checkpointed what was taught

    with edgecvm.open_device(test_bundle, profile="host", state=state, read_only=True) as device:
        assert device.known == list(concepts) and device.learner.counters.updates == 45
        with pytest.raises(edgecvm.BadInputError, match="read-only"):
            device.teach(_images(samples_dir, "goldfish")[0], "goldfish")


def test_features_arrays_and_every_bad_input_get_a_clear_error(tmp_path: Path, test_bundle: Path,
                                                                samples_dir: Path) -> None:
    with edgecvm.open_device(test_bundle, state=tmp_path / "state", checkpoint_every=2) as device:
        frame = np.asarray(Image.open(_images(samples_dir, "goldfish")[0]).convert("RGB"))
        features = device.features(frame)
        assert features.shape == (1, device.bundle.manifest.feature_dim)
        device.teach_features(np.repeat(features, 2, axis=0), "goldfish")  # one concept for every row
        device.teach_features(features[0], ["teapot"])  # a single (F,) vector
        assert device.known == ["goldfish", "teapot"] and device.checkpointer.written == 1  # every 2 updates
        assert device.predict(frame, vocab="all").top_k  # zero-shot over the whole anchor file still answers
        broken = tmp_path / "broken.jpg"
        broken.write_bytes(b"\xff\xd8 not a jpeg")
        for bad, message in ((broken, "broken.jpg: cannot decode"), (tmp_path / "missing.jpg", "missing.jpg: cannot read"),
                             (np.zeros((4, 4), np.uint8), r"\(H, W, 3\) uint8"), (42, "expected an image path")):
            with pytest.raises(edgecvm.BadInputError, match=message):
                device.teach(bad, "goldfish")
        with pytest.raises(edgecvm.BadInputError, match="not a concept|no concept|unknown concept"):
            device.teach(frame, "no such concept at all")
        nan = np.full_like(features, np.nan)
        assert device.teach_features(nan, "goldfish").skipped
        assert device.known == ["goldfish", "teapot"]  # nothing was lost to the bad inputs


def test_without_a_state_dir_nothing_is_written_and_checkpoint_says_why(tmp_path: Path, test_bundle: Path,
                                                                        samples_dir: Path) -> None:
    with edgecvm.open_device(test_bundle) as device:
        device.teach(_images(samples_dir, "goldfish")[0], "goldfish")
        with pytest.raises(edgecvm.BadInputError, match="without a state dir"):
            device.checkpoint()


_PROCESS_PROBE = """
import hashlib, json, os, sys
def umask():
    with open("/proc/self/status") as fh:
        return next(line.split()[1] for line in fh if line.startswith("Umask:"))
os.umask(0o027)
before = umask()
import edgecvm
with edgecvm.open_device(sys.argv[1], state=sys.argv[2]) as device:
    device.teach_features(device.features(sys.argv[3]), "goldfish")
print(json.dumps({"umask_before": before, "umask_after": umask(), "scrypt": hasattr(hashlib, "scrypt"),
                  "hashlib_blocked": "_hashlib" in sys.modules and sys.modules["_hashlib"] is None,
                  "state_mode": oct(os.stat(os.path.join(sys.argv[2], "state.npz")).st_mode & 0o777)}))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the umask from /proc")
def test_opening_a_device_leaves_the_host_process_as_it_was(tmp_path: Path, test_bundle: Path,
                                                            samples_dir: Path) -> None:
    """A robot program that embeds edgecvm keeps its hashlib, its umask (files are still created with it)."""
    done = subprocess.run([sys.executable, "-c", _PROCESS_PROBE, str(test_bundle), str(tmp_path / "state"),
                           str(_images(samples_dir, "goldfish")[0])], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    probe = json.loads(done.stdout)
    assert probe["umask_before"] == probe["umask_after"] == "0027"
    assert probe["scrypt"] and not probe["hashlib_blocked"]
    assert probe["state_mode"] == "0o640"  # 0666 under the caller's umask


def test_the_public_names_are_the_documented_ones() -> None:
    assert set(edgecvm.__all__) == {"__version__", *edgecvm._API}
    for name in edgecvm.__all__:
        assert getattr(edgecvm, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        edgecvm.nope  # noqa: B018


def test_a_device_opens_streams_as_it_reads_frames(tmp_path: Path, test_bundle: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Its camera is asked for the frame size its plan counts; a large JPEG is decoded no larger than it needs."""
    from edgecvm.device import streams

    photo = tmp_path / "photos" / "lemon" / "photo.jpg"
    photo.parent.mkdir(parents=True)
    Image.new("RGB", (4032, 3024), (200, 180, 20)).save(photo)
    cv2 = FakeOpenCV()
    monkeypatch.setattr(streams, "import_cv2", lambda: cv2)
    with edgecvm.open_device(test_bundle, frame_size=(1280, 720)) as device:
        assert "1280x720 RGB frame" in device.plan.table(device.profile.memory_budget_mb)
        with device.open_stream("camera0", limit=1) as camera:
            assert [frame.image.size for frame in camera] == [(1280, 720)]
        with device.open_stream(str(tmp_path / "photos")) as files:
            (frame,) = list(files)
        (width, height), (least_w, least_h) = frame.image.size, device.extractor.preprocess.decode_size(4032, 3024)
        assert least_w <= width < 4032 and least_h <= height < 3024 and frame.label == "lemon"


def test_a_stream_is_answered_frame_by_frame_as_predict_answers_each_image(
        tmp_path: Path, test_bundle: Path, samples_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import time

    from edgecvm.device import streams

    photos = tmp_path / "photos" / "lemon"
    photos.mkdir(parents=True)
    for path in _images(samples_dir, "lemon", "val")[:4]:
        (photos / path.name).write_bytes(path.read_bytes())
    (photos / "zz-broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    with edgecvm.open_device(test_bundle) as device:
        with device.open_stream(str(tmp_path / "photos")) as stream:
            answers = list(device.predict_stream(stream, top_k=3))
        assert [Path(a.frame.origin).name for a in answers] == sorted(p.name for p in photos.iterdir())
        *good, broken = answers
        assert broken.prediction is None and "cannot decode image" in broken.frame.error
        for answer in good:  # the same answer as for the image alone; a file has no moment of arrival
            assert answer.prediction == device.predict(answer.frame.origin, top_k=3) and answer.latency_s is None

        monkeypatch.setattr(streams, "import_cv2", lambda: FakeOpenCV(mode=(640, 480)))
        with device.open_stream("camera0") as camera:
            for n, answer in enumerate(device.predict_stream(camera)):  # a camera never ends: leave the loop
                assert answer.prediction is not None and answer.latency_s is not None and answer.latency_s >= 0
                assert "edgecvm-prepare" in {t.name for t in threading.enumerate()}  # the pipeline's worker
                if n == 2:
                    break
            assert "edgecvm-prepare" not in {t.name for t in threading.enumerate()}  # leaving the loop stopped it

        with device.open_stream("camera0") as camera:  # robot code that thinks between answers
            answers = device.predict_stream(camera)
            next(answers)
            thought_from = time.monotonic()
            threading.Event().wait(2.5 * STALE_FRAME_S)  # longer than a waiting frame may get old
            after = next(answers)
            answers.close()
        # The frame read while the loop thought is replaced by one the camera delivered after the thinking began.
        assert after.frame.arrived is not None and after.frame.arrived > thought_from


@pytest.mark.parametrize("size", [(0, 480), (640.5, 480), (640,), "640x480"])
def test_a_bad_frame_size_is_named(test_bundle: Path, size: object) -> None:
    with pytest.raises(edgecvm.BadInputError, match=r"frame_size must be \(width, height\) in whole pixels"):
        edgecvm.open_device(test_bundle, frame_size=size)  # type: ignore[arg-type]
    with pytest.raises(edgecvm.BadInputError, match=r"capture_size must be"):
        edgecvm.open_stream("camera0", capture_size=size)  # type: ignore[arg-type]
