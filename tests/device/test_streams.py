"""Stream sources: every kind yields the same Frame; bad images become error frames; cameras reconnect or give up."""

from __future__ import annotations

import io
import itertools
import json
import logging
import shutil
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fake_opencv import FakeOpenCV
from PIL import Image

from edgecvm.device import image_files, streams
from edgecvm.device.camera import Backoff, LiveCamera
from edgecvm.device.frame_size import CAPTURE_SIZE
from edgecvm.device.preprocess import Preprocessor
from edgecvm.device.streams import CameraStream, SourceKind, open_stream, source_kind
from edgecvm.errors import BadInputError, StreamLostError


def jpeg_bytes(colour: tuple[int, int, int], size: tuple[int, int] = (24, 16)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "JPEG")
    return buf.getvalue()


def write_image(path: Path, colour: tuple[int, int, int] = (200, 10, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg_bytes(colour))
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """cat/0..2.jpg, dog/0..2.jpg, a non-image, a hidden file and one image at the root."""
    root = tmp_path / "photos"
    for label, colour in (("cat", (250, 0, 0)), ("dog", (0, 250, 0))):
        for i in range(3):
            write_image(root / label / f"{i}.jpg", colour)
    (root / "cat" / "notes.txt").write_text("not an image")
    write_image(root / "dog" / ".hidden.jpg")
    write_image(root / "loose.jpg")
    return root


def frames_of(spec: str | Path, **kwargs) -> list:
    with open_stream(str(spec), **kwargs) as stream:
        return list(stream)


# ---- folders, zips, manifests -------------------------------------------------------------------


def test_folder_is_labelled_by_sub_folder_in_sorted_order(folder: Path) -> None:
    with open_stream(str(folder)) as stream:
        assert stream.kind is SourceKind.FOLDER
        assert stream.labels == ("cat", "dog")
        assert stream.total == 7
        frames = list(stream)
    assert [f.label for f in frames] == ["cat"] * 3 + ["dog"] * 3 + [None]
    assert [Path(f.origin).name for f in frames] == ["0.jpg", "1.jpg", "2.jpg"] * 2 + ["loose.jpg"]
    assert all(f.error is None and f.image.mode == "RGB" and f.image.size == (24, 16) for f in frames)
    assert frames[0].image.getpixel((5, 5))[0] > 200  # the cat images are red: real pixels, not a placeholder


def test_every_limit_and_shuffle(folder: Path) -> None:
    assert [Path(f.origin).name for f in frames_of(folder, every=3)] == ["0.jpg", "0.jpg", "loose.jpg"]
    assert len(frames_of(folder, limit=2)) == 2
    assert len(frames_of(folder, every=2, limit=3)) == 3
    sorted_order = [f.origin for f in frames_of(folder)]
    shuffled = [f.origin for f in frames_of(folder, shuffle=7)]
    assert shuffled == [f.origin for f in frames_of(folder, shuffle=7)]  # deterministic per seed
    assert shuffled != sorted_order and sorted(shuffled) == sorted(sorted_order)
    with pytest.raises(BadInputError, match="every .keep every N-th frame. and limit must be >= 1"):
        open_stream(str(folder), every=0)


def make_tiny_zip(path: Path) -> Path:
    """The Tiny-ImageNet layout: root/{wnids,words}.txt, root/train/<wnid>/, root/val/<wnid>/."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("tiny/words.txt", "n001\tEgyptian cat, cat\nn002\tgoldfish, Carassius auratus\nn999\tunused\n")
        for split, count in (("train", 3), ("val", 2)):
            for wnid, colour in (("n001", (200, 0, 0)), ("n002", (0, 0, 200))):
                for i in range(count):
                    zf.writestr(f"tiny/{split}/{wnid}/{wnid}_{i}.JPEG", jpeg_bytes(colour))
        zf.writestr("__MACOSX/tiny/train/n001/._n001_0.JPEG", b"resource fork")
    return path


def test_zip_subfolder_names_wnids_from_words_txt(tmp_path: Path) -> None:
    archive = make_tiny_zip(tmp_path / "tiny.zip")
    with open_stream(f"{archive}/tiny/val") as stream:
        assert stream.kind is SourceKind.ZIP
        assert stream.labels == ("Egyptian cat", "goldfish")
        frames = list(stream)
    assert [f.label for f in frames] == ["Egyptian cat"] * 2 + ["goldfish"] * 2
    assert frames[0].origin == f"{archive}/tiny/val/n001/n001_0.JPEG"
    assert all(f.error is None for f in frames)
    whole = frames_of(archive)
    assert len(whole) == 10  # train + val, the __MACOSX entry skipped
    with pytest.raises(BadInputError, match="no folder 'tiny/test'"):
        open_stream(f"{archive}/tiny/test")


def test_zip_without_words_txt_keeps_folder_names(tmp_path: Path) -> None:
    archive = tmp_path / "plain.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("mug/a.jpg", jpeg_bytes((1, 2, 3)))
    assert [f.label for f in frames_of(archive)] == ["mug"]


def test_csv_and_jsonl_manifests_with_relative_and_zip_paths(folder: Path, tmp_path: Path) -> None:
    archive = make_tiny_zip(tmp_path / "tiny.zip")
    csv_path = tmp_path / "list.csv"
    csv_path.write_text(f"path,label\nphotos/cat/0.jpg,tabby\n# a comment\n\n{archive}/tiny/val/n002/n002_1.JPEG,goldfish\n"
                        "photos/dog/1.jpg\n")
    frames = frames_of(csv_path)
    assert [(Path(f.origin).name, f.label, f.error) for f in frames] == [
        ("0.jpg", "tabby", None), ("n002_1.JPEG", "goldfish", None), ("1.jpg", None, None)]
    jsonl = tmp_path / "list.jsonl"
    jsonl.write_text(json.dumps({"path": "photos/cat/1.jpg", "label": "cat"}) + "\n"
                     + json.dumps({"path": str(folder / "dog" / "2.jpg")}) + "\n")
    assert [(f.label, f.error) for f in frames_of(jsonl, labels_from="manifest")] == [("cat", None), (None, None)]


@pytest.mark.parametrize("content, message", [
    ("a.jpg,cat,extra\n", r"list.csv:1: expected 'path,label'"),
    ("", "lists no images"),
])
def test_malformed_csv_manifest_names_the_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "list.csv"
    path.write_text(content)
    with pytest.raises(BadInputError, match=message):
        open_stream(str(path))


def test_malformed_jsonl_manifest_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "list.jsonl"
    path.write_text('{"path": "a.jpg"}\n{"path": "b.jpg", "lable": "cat"}\n')
    with pytest.raises(BadInputError, match=r"list.jsonl:2:"):
        open_stream(str(path))


def test_missing_manifest_entry_is_an_error_frame(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text("nowhere.jpg,cat\n")
    (frame,) = frames_of(path)
    assert frame.image is None and frame.label == "cat" and "cannot read" in frame.error


# ---- bad images ---------------------------------------------------------------------------------


def test_corrupt_empty_and_fake_images_are_error_frames_and_the_stream_goes_on(tmp_path: Path) -> None:
    root = tmp_path / "bad"
    good = jpeg_bytes((10, 200, 10), size=(64, 64))
    (root / "cat").mkdir(parents=True)
    (root / "cat" / "1_truncated.jpg").write_bytes(good[: len(good) // 3])
    (root / "cat" / "2_empty.jpg").write_bytes(b"")
    (root / "cat" / "3_text.jpg").write_bytes(b"this is not a jpeg at all")
    (root / "cat" / "4_good.jpg").write_bytes(good)
    frames = frames_of(root)
    assert [f.error is None for f in frames] == [False, False, False, True]
    assert all(f.image is None for f in frames[:3]) and frames[3].image is not None
    assert "empty file" in frames[1].error and "cannot decode" in frames[0].error
    assert all(f.label == "cat" for f in frames)


def test_unusual_modes_become_rgb_and_huge_images_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "modes"
    root.mkdir()
    Image.new("L", (8, 8), 128).save(root / "a_grey.png")
    Image.new("RGBA", (8, 8), (0, 0, 255, 128)).save(root / "b_rgba.png")
    Image.fromarray(np.full((8, 8), 60000, dtype=np.uint16)).save(root / "c_16bit.png")
    Image.new("1", (7000, 7000)).save(root / "d_huge.png")  # 49 MP: tiny file, 147 MB once decoded to RGB
    frames = frames_of(root)
    assert [f.image.mode for f in frames[:3]] == ["RGB"] * 3
    assert frames[3].image is None and "too large" in frames[3].error


# ---- spec resolution ----------------------------------------------------------------------------


def test_large_jpegs_are_decoded_no_larger_than_the_device_needs(samples_dir: Path, tmp_path: Path) -> None:
    preprocess = Preprocessor(224, 256, "bilinear", (0.5,) * 3, (0.5,) * 3)
    source = Image.open(sorted((samples_dir / "val").glob("*/*.JPEG"))[0]).convert("RGB")
    root = tmp_path / "large" / "thing"
    root.mkdir(parents=True)
    for name, size in (("1080p.jpg", (1920, 1080)), ("photo.jpg", (4032, 3024)), ("vga.jpg", (640, 480)),
                       ("1080p.png", (1920, 1080))):
        source.resize(size).save(root / name)
    decoded = {Path(f.origin).name: f.image for f in frames_of(root.parent, decode_size=preprocess.decode_size)}
    assert {name: image.size for name, image in decoded.items()} == {
        "1080p.jpg": (960, 540), "photo.jpg": (1008, 756),  # the DCT's 1/2 and 1/4: still >= 2 x 224 px across
        "vga.jpg": (640, 480), "1080p.png": (1920, 1080)}  # halving a 640 x 480 frame would leave too few; not a JPEG
    whole = {Path(f.origin).name: f.image for f in frames_of(root.parent)}
    assert {name: image.size for name, image in whole.items()}["photo.jpg"] == (4032, 3024)
    assert np.array_equal(np.asarray(whole["vga.jpg"]), np.asarray(decoded["vga.jpg"]))
    with open_stream(str(root.parent), loop=True, decode_size=preprocess.decode_size) as looped:
        sizes = [frame.image.size for frame in itertools.islice(looped, 8)]
    assert sizes.count((1008, 756)) == 2  # the second pass too


def test_a_jpeg_over_the_pixel_limit_is_taken_when_it_decodes_smaller(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image_files, "MAX_FRAME_PIXELS", 1_000_000)
    data = jpeg_bytes((10, 200, 10), (1920, 1080))  # 2.1 MP
    preprocess = Preprocessor(224, 256, "bilinear", (0.5,) * 3, (0.5,) * 3)
    image, error = image_files.decode_image(data)
    assert image is None and "too large (1920x1080 pixels > 1,000,000)" in error
    image, error = image_files.decode_image(data, preprocess.decode_size)
    assert error is None and image.size == (960, 540)
    small = Preprocessor(64, 64, "bilinear", (0.5,) * 3, (0.5,) * 3)  # asks for 228 x 128: the decoder stops at 1/8
    assert image_files.decode_image(jpeg_bytes((0, 0, 0), (4000, 2250)), small.decode_size)[0].size == (500, 282)
    png = io.BytesIO()
    Image.new("RGB", (1920, 1080)).save(png, "PNG")
    assert "too large" in image_files.decode_image(png.getvalue(), preprocess.decode_size)[1]  # no smaller decode


def test_unknown_specs_and_option_mismatches_are_bad_input(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="no such file, folder or camera"):
        open_stream(str(tmp_path / "missing"))
    (tmp_path / "x.xyz").write_text("?")
    with pytest.raises(BadInputError, match="unknown stream type"):
        open_stream(str(tmp_path / "x.xyz"))
    with pytest.raises(BadInputError, match="labels from manifest need"):
        open_stream(str(folder), labels_from="manifest")
    single = write_image(tmp_path / "one.jpg")
    with pytest.raises(BadInputError, match="labels from dirs need"):
        open_stream(str(single), labels_from="dirs")
    assert [f.label for f in frames_of(single)] == [None]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BadInputError, match="no images found"):
        open_stream(str(empty))


def test_video_file_every_and_limit(tmp_path: Path) -> None:
    cv2 = pytest.importorskip("cv2")
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    for i in range(10):
        writer.write(np.full((24, 32, 3), (0, 0, 20 * i), dtype=np.uint8))  # BGR: red grows
    writer.release()
    frames = frames_of(path, every=3)
    assert [f.origin.rsplit("#", 1)[1] for f in frames] == ["0", "3", "6", "9"]
    assert frames[-1].image.getpixel((4, 4))[0] > frames[0].image.getpixel((4, 4))[0] + 100  # BGR -> RGB
    assert len(frames_of(path, limit=4)) == 4


def test_a_video_larger_than_the_planned_frames_is_named(tmp_path: Path, caplog) -> None:
    cv2 = pytest.importorskip("cv2")
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 240))
    writer.write(np.zeros((240, 320, 3), dtype=np.uint8))
    writer.release()
    with caplog.at_level(logging.WARNING):
        open_stream(str(path)).close()  # within the default 640x480
        assert "memory plan" not in caplog.text
        open_stream(str(path), capture_size=(160, 120)).close()
    assert "clip.avi has 320x240 frames, larger than the 160x120 the memory plan counts" in caplog.text


# ---- cameras ------------------------------------------------------------------------------------


def test_missing_camera_is_a_clear_error() -> None:
    pytest.importorskip("cv2")
    with pytest.raises(BadInputError, match="camera9: no camera at index 9"):
        open_stream("camera9")


def test_camera_without_opencv_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cv2", None)  # makes `import cv2` raise ImportError
    with pytest.raises(BadInputError, match=r"pip install edgecvm\[camera\]"):
        open_stream("camera0")


@pytest.mark.parametrize("asked", [None, (1280, 720)])
def test_a_camera_is_asked_for_the_capture_size(monkeypatch: pytest.MonkeyPatch, caplog, asked) -> None:
    cv2 = FakeOpenCV()
    monkeypatch.setattr(streams, "import_cv2", lambda: cv2)
    with open_stream("camera0", limit=2, **({} if asked is None else {"capture_size": asked})) as stream:
        sizes = [frame.image.size for frame in stream]
    expected = asked or CAPTURE_SIZE
    assert cv2.asked == {3: expected[0], 4: expected[1]}
    assert sizes == [expected, expected]
    assert "asked for" not in caplog.text


def test_a_camera_without_the_size_asked_for_is_named_once(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    monkeypatch.setattr(streams, "import_cv2", lambda: FakeOpenCV(mode=(1920, 1080)))
    with caplog.at_level(logging.WARNING), open_stream("camera0", limit=3) as stream:
        sizes = [frame.image.size for frame in stream]
    assert sizes == [(1920, 1080)] * 3
    warnings = [r.getMessage() for r in caplog.records if "asked for" in r.getMessage()]
    assert warnings == ["camera0 delivers 1920x1080 frames, not the 640x480 asked for (the memory plan counts "
                        "640x480; --camera-size sets both)"]


class FakeCamera:
    """A device that delivers ``frames_per_open`` numbered frames, then fails every read."""

    def __init__(self, log: list[tuple[str, float]], frames_per_open: int, delay_s: float = 0.0) -> None:
        self.log, self.left, self.delay_s = log, frames_per_open, delay_s
        self.log.append(("open", time.monotonic()))

    def read(self) -> tuple[bool, np.ndarray | None]:
        time.sleep(self.delay_s)
        if self.left <= 0:
            return False, None
        self.left -= 1
        FakeCamera.counter += 1
        return True, np.full((6, 8, 3), FakeCamera.counter % 256, dtype=np.uint8)

    def release(self) -> None:
        self.log.append(("release", time.monotonic()))

    counter = 0


def test_flaky_camera_reopens_with_backoff_then_gives_up() -> None:
    log: list[tuple[str, float]] = []
    opens = iter([lambda: FakeCamera(log, 3)] + [lambda: FakeCamera(log, 0)] * 100)
    camera = LiveCamera("fakecam", lambda: next(opens)(), Backoff(initial_s=0.02, max_s=0.16, give_up_after_s=0.6))
    stream = CameraStream(camera, SourceKind.CAMERA, every=1, limit=None)
    got = []
    with pytest.raises(StreamLostError, match="fakecam: camera lost") as info, stream:
        for frame in stream:
            got.append(frame)
    assert info.value.exit_code == 4
    assert 1 <= len(got) <= 3 and all(f.image is not None and f.image.mode == "RGB" for f in got)
    open_times = [t for what, t in log if what == "open"]
    gaps = np.diff(open_times[1:])  # between reopen attempts
    assert len(open_times) >= 4
    assert gaps[-1] > 2 * gaps[0]  # exponential backoff, not a busy loop
    assert open_times[-1] - open_times[1] < 1.0  # gave up near the configured time
    assert [what for what, _ in log].count("release") == len(open_times)  # every handle released


def test_camera_that_comes_back_keeps_streaming() -> None:
    log: list[tuple[str, float]] = []
    opens = iter([lambda: FakeCamera(log, 2), lambda: FakeCamera(log, 0), lambda: FakeCamera(log, 1000)])
    camera = LiveCamera("fakecam", lambda: next(opens)(), Backoff(initial_s=0.01, max_s=0.05, give_up_after_s=5))
    with CameraStream(camera, SourceKind.CAMERA, every=1, limit=6) as stream:
        frames = list(stream)
    assert len(frames) == 6 and camera.reopen_count == 1
    assert [what for what, _ in log].count("open") == 3


def test_live_camera_delivers_the_newest_frame_not_a_backlog() -> None:
    log: list[tuple[str, float]] = []
    camera = LiveCamera("fastcam", lambda: FakeCamera(log, 10_000, delay_s=0.002))
    seqs = []
    with camera:
        for seq, _, _ in camera.frames():
            seqs.append(seq)
            time.sleep(0.03)  # a slow consumer: the camera produces ~15 frames meanwhile
            if len(seqs) == 5:
                break
    assert np.diff(seqs).min() > 3  # stale frames were dropped
    assert log[-1][0] == "release"


def test_interrupt_ends_a_waiting_camera_iteration() -> None:
    camera = LiveCamera("stuckcam", lambda: FakeCamera([], 0), Backoff(initial_s=0.05, give_up_after_s=30))
    stream = CameraStream(camera, SourceKind.CAMERA, every=1, limit=None)
    threading.Timer(0.2, stream.interrupt).start()
    started = time.monotonic()
    with stream:
        assert list(stream) == []
    assert time.monotonic() - started < 2


def test_source_kind_resolves_without_opening_anything(folder: Path, tmp_path: Path) -> None:
    named_like_a_camera = tmp_path / "camera_photos"
    shutil.copytree(folder, named_like_a_camera)
    assert source_kind(str(named_like_a_camera)) is SourceKind.FOLDER and SourceKind.FOLDER.labelled
    assert source_kind("camera3") is SourceKind.CAMERA and not SourceKind.CAMERA.labelled  # no device opened
    assert source_kind("picamera2") is SourceKind.PICAMERA2


# ---- looping and real-time video --------------------------------------------------------------------


def test_a_looped_source_starts_again_when_it_ends(samples_dir: Path):
    import itertools

    folder = samples_dir / "val" / "lemon"
    count = sum(1 for _ in folder.iterdir())
    with open_stream(str(folder), loop=True) as stream:
        frames = list(itertools.islice(stream, 2 * count + 1))
    assert stream.total is None
    assert [f.origin for f in frames[count:2 * count]] == [f.origin for f in frames[:count]]


def test_a_camera_cannot_be_looped():
    with pytest.raises(BadInputError, match="only a finite source"):
        open_stream("camera7", loop=True)


def test_a_realtime_video_plays_no_faster_than_its_frame_rate(tmp_path: Path):
    cv2 = pytest.importorskip("cv2")
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (32, 32))
    for i in range(6):
        writer.write(np.full((32, 32, 3), i * 40, dtype=np.uint8))
    writer.release()
    with open_stream(str(path), realtime=True) as stream:
        started = time.monotonic()
        frames = list(stream)
        elapsed = time.monotonic() - started
    assert len(frames) == 6 and stream.frame_interval_s == pytest.approx(1 / 25)
    assert elapsed >= 5 / 25  # a lower bound: frame i is not read before i / fps


def test_a_realtime_video_skips_the_frames_a_slow_consumer_is_too_late_for(tmp_path: Path):
    cv2 = pytest.importorskip("cv2")
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 100.0, (32, 32))
    for i in range(12):
        writer.write(np.full((32, 32, 3), i * 20, dtype=np.uint8))
    writer.release()
    late = threading.Event()  # never set: waiting on it stands for a slow backbone
    with open_stream(str(path), realtime=True) as stream:
        frames = []
        for frame in stream:
            frames.append(frame)
            late.wait(0.05)  # five frame intervals
    indices = [int(f.origin.rsplit("#", 1)[1]) for f in frames]
    assert indices[0] == 0 and len(frames) < 12 and min(np.diff(indices)) >= 2  # no backlog of stale frames
    assert all(f.arrived is not None for f in frames)


def _clip(path: Path, fps: float, frames: int) -> Path:
    cv2 = pytest.importorskip("cv2")
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (32, 32))
    for i in range(frames):
        writer.write(np.full((32, 32, 3), i * 20, dtype=np.uint8))
    writer.release()
    return path


def test_a_realtime_video_says_when_its_next_frame_is_due(tmp_path: Path):
    with open_stream(str(_clip(tmp_path / "slow.avi", 0.5, 3)), realtime=True) as stream:
        assert not stream.newer_frame_ready()  # nothing yielded yet
        next(iter(stream))
        assert not stream.newer_frame_ready()  # the next frame is due two seconds after this one
    with open_stream(str(_clip(tmp_path / "fast.avi", 50.0, 3)), realtime=True) as stream:
        next(iter(stream))
        threading.Event().wait(0.1)  # five frame intervals: the next frame is due (a lower bound, never flaky)
        assert stream.newer_frame_ready()


@pytest.mark.parametrize("live", ["video", "camera"])
def test_a_returned_frame_does_not_count_toward_the_limit(tmp_path: Path, live: str):
    if live == "video":
        stream = open_stream(str(_clip(tmp_path / "clip.avi", 50.0, 5)), realtime=True, limit=2)
    else:
        stream = CameraStream(LiveCamera("fakecam", lambda: FakeCamera([], 10_000, delay_s=0.002)),
                              SourceKind.CAMERA, every=1, limit=2)
    with stream:
        frames = iter(stream)
        next(frames)
        next(frames)
        stream.return_last()  # replaced unused by a newer one: two frames are still owed
        assert next(frames).image is not None
        assert next(frames, None) is None


def test_a_camera_says_when_a_newer_frame_is_ready() -> None:
    camera = LiveCamera("fastcam", lambda: FakeCamera([], 10_000, delay_s=0.002))
    with CameraStream(camera, SourceKind.CAMERA, every=1, limit=None) as stream:
        frames = iter(stream)
        first = next(frames)
        pause = threading.Event()  # never set: paces the polling below
        for _ in range(3000):  # the reader thread delivers a frame every ~2 ms; 30 s at most
            if stream.newer_frame_ready():
                break
            pause.wait(0.01)
        assert stream.newer_frame_ready()  # and it stays ready until the stream yields again
        assert int(next(frames).origin.rsplit("#", 1)[1]) > int(first.origin.rsplit("#", 1)[1])
