"""Frame sources: one function turns a ``--stream`` spec into frames of one shape.

``open_stream`` resolves ``camera0``/``cameraN`` (OpenCV), ``picamera2``, a
video file, a single image, an image folder, a zip of images, or a manifest
(``path,label`` CSV or JSONL) into a ``Stream`` of ``Frame``s. Folders and zips
are labelled by each image's parent folder (Tiny-ImageNet's wnid folders are
mapped to names with the zip's ``words.txt``); a path *inside* a zip is
written as if the zip were a folder (``data.zip/tiny-imagenet-200/val``), in
specs and in manifests alike.

Frames that cannot be decoded (corrupt, truncated, empty, absurdly large) are
yielded with ``error`` set and no image: the learner skips and counts them.
Nothing here ever substitutes a blank frame or another source: a learner would
train on it. File sources are ordered deterministically (sorted paths: one
class after another, the class-incremental case); ``shuffle`` mixes them with a
seed. ``every`` keeps every N-th frame, ``limit`` stops after N frames.
A finite source can be looped (read again from the start whenever it ends),
and a video file can play at its own frame rate, as a camera would deliver it.
Frames of a camera or a real-time video carry their arrival time, so the
latency from arrival to answer can be measured.
"""

from __future__ import annotations

import enum
import logging
import random
import re
import threading
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from edgecvm.device.camera import Backoff, Capture, LiveCamera
from edgecvm.device.frame_size import CAPTURE_SIZE, checked_frame_size
from edgecvm.device.image_files import (
    IMAGE_SUFFIXES,
    DecodeSize,
    FileReader,
    ImageItem,
    decode_image,
    folder_items,
    manifest_items,
    split_zip_path,
    zip_items,
)
from edgecvm.errors import BadInputError

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".h264"})
MANIFEST_SUFFIXES = frozenset({".csv", ".jsonl", ".ndjson"})
_CAMERA = re.compile(r"camera(\d+)")
LabelsFrom = Literal["dirs", "manifest"]


class SourceKind(enum.Enum):
    CAMERA = "camera"
    PICAMERA2 = "picamera2"
    VIDEO = "video"
    IMAGE = "image"
    FOLDER = "folder"
    ZIP = "zip"
    MANIFEST = "manifest"

    @property
    def labelled(self) -> bool:
        """Sources whose frames can carry labels (sub-folders, a manifest column)."""
        return self in (SourceKind.FOLDER, SourceKind.ZIP, SourceKind.MANIFEST)


@dataclass(frozen=True)
class Frame:
    """One frame of any source: an RGB image, or ``error`` saying why there is none."""

    image: Image.Image | None
    label: str | None
    origin: str  # file path, zip member path or "camera0#123": names the frame in warnings
    error: str | None = None
    arrived: float | None = None  # time.monotonic() when a live source delivered it (None for files)

    def age_s(self, now: float | None = None) -> float | None:
        """Seconds since a live source delivered the frame (at ``now``, a ``time.monotonic()`` reading; default:
        this moment); None for a file's frame, which has no moment of arrival."""
        if self.arrived is None:
            return None
        return max((time.monotonic() if now is None else now) - self.arrived, 0.0)


class Stream:
    """Frames from one source; iterate once. Use as a context manager to release files and devices."""

    def __init__(self, kind: SourceKind, spec: str, total: int | None, labels: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.spec = spec
        self.total = total  # frames it will yield, when known (progress bars)
        self.labels = labels  # distinct labels of a file source, known before reading a frame

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    @property
    def reconnecting(self) -> bool:
        """A live source whose device failed and is being reopened."""
        return False

    def interrupt(self) -> None:
        """Make iteration end soon (signal handlers); only live sources block long enough to need it."""

    def newer_frame_ready(self) -> bool:
        """A live source has a frame newer than the last one it yielded, which the next step of the iteration
        would yield without waiting (a file source never has)."""
        return False

    def return_last(self) -> None:
        """The last frame yielded was replaced by a newer one unused: it does not count toward the limit."""

    def close(self) -> None:
        """Release files and devices."""

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FileStream(Stream):
    """Images listed up front (folder, zip, manifest, one file): decoded one at a time, in order."""

    def __init__(self, kind: SourceKind, spec: str, items: Sequence[ImageItem], reader: FileReader,
                 decode_size: DecodeSize | None = None) -> None:
        labels = tuple(sorted({item.label for item in items if item.label is not None}))
        super().__init__(kind, spec, len(items), labels)
        self.items = list(items)
        self.reader = reader
        self.decode_size = decode_size

    def __iter__(self) -> Iterator[Frame]:
        for item in self.items:
            try:
                data = self.reader.read(item.origin)
            except (OSError, KeyError, zipfile.BadZipFile, RuntimeError) as exc:  # RuntimeError: encrypted member
                yield Frame(None, item.label, item.origin, f"cannot read ({type(exc).__name__}: {exc})")
                continue
            image, error = decode_image(data, self.decode_size)
            yield Frame(image, item.label, item.origin, error)

    def close(self) -> None:
        self.reader.close()


# ---- video files and cameras --------------------------------------------------------------------


def import_cv2():
    """OpenCV, imported only for video and camera sources (the device may not have it)."""
    try:
        import cv2
    except ImportError:
        raise BadInputError(
            "OpenCV is not installed; camera and video streams need it: pip install edgecvm[camera]"
        ) from None
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # we report missing devices ourselves
    return cv2


def bgr_to_image(frame: np.ndarray) -> Image.Image:
    """An OpenCV frame (BGR, BGRA or grey uint8) as an RGB PIL image."""
    if frame.ndim == 2:
        return Image.fromarray(frame).convert("RGB")
    return Image.fromarray(np.ascontiguousarray(frame[..., 2::-1]))


class VideoStream(Stream):
    """A video file, as fast as it decodes or (``realtime``) as a camera delivers it: no faster than its own frame
    rate, and a frame whose successor is already due when it is read is skipped (a camera keeps only the newest)."""

    def __init__(self, path: Path, every: int, limit: int | None, realtime: bool = False,
                 planned_size: tuple[int, int] = CAPTURE_SIZE) -> None:
        cv2 = import_cv2()
        self.capture = cv2.VideoCapture(str(path))
        if not self.capture.isOpened():
            raise BadInputError(f"{path}: OpenCV cannot open this video (unsupported codec or corrupt file)")
        size = int(self.capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self.capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if size[0] * size[1] > planned_size[0] * planned_size[1]:  # decoded whole: each frame in flight is larger
            log.warning("%s has %dx%d frames, larger than the %dx%d the memory plan counts (--camera-size %dx%d "
                        "plans for them)", path, *size, *planned_size, *size)
        count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT))
        total = -(-count // every) if count > 0 else None
        super().__init__(SourceKind.VIDEO, str(path), _cap(total, limit))
        self.every, self.limit = every, limit
        fps = self.capture.get(cv2.CAP_PROP_FPS)
        self.frame_interval_s = 1.0 / fps if realtime and fps > 0 else 0.0
        self._interrupted = threading.Event()
        self._used = 0  # frames yielded and not returned: what the limit counts
        self._next_due: float | None = None  # when the frame after the last one yielded is due (real time)

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        started = time.monotonic()
        while self.limit is None or self._used < self.limit:
            due = None
            if self.frame_interval_s:
                due = started + index * self.frame_interval_s
                if self._interrupted.wait(max(0.0, due - time.monotonic())):
                    return
            if not self.capture.grab():
                return
            if due is not None and time.monotonic() >= due + self.frame_interval_s:
                index += 1  # the next frame is already due: a camera would have replaced this one
                continue
            if index % self.every == 0:
                ok, frame = self.capture.retrieve()
                origin = f"{self.spec}#{index}"
                self._used += 1
                if due is not None:
                    self._next_due = due + self.every * self.frame_interval_s
                yield Frame(bgr_to_image(frame), None, origin, arrived=due) if ok else \
                    Frame(None, None, origin, "cannot decode frame", due)
            index += 1

    def newer_frame_ready(self) -> bool:
        return self._next_due is not None and time.monotonic() >= self._next_due

    def return_last(self) -> None:
        self._used -= 1

    def interrupt(self) -> None:
        self._interrupted.set()

    def close(self) -> None:
        self.capture.release()


class LoopedStream(Stream):
    """A finite source read again from the start each time it ends (``open_once`` opens one pass)."""

    def __init__(self, open_once: Callable[[], Stream]) -> None:
        first = open_once()
        super().__init__(first.kind, first.spec, None, first.labels)
        self._open_once, self._current = open_once, first
        self._interrupted = False

    def __iter__(self) -> Iterator[Frame]:
        while True:
            yielded = False
            with self._current as stream:
                for frame in stream:
                    yielded = True
                    yield frame
            if not yielded or self._interrupted:  # an empty pass would loop forever
                return
            self._current = self._open_once()

    def newer_frame_ready(self) -> bool:
        return self._current.newer_frame_ready()

    def return_last(self) -> None:
        self._current.return_last()

    def interrupt(self) -> None:
        self._interrupted = True
        self._current.interrupt()

    def close(self) -> None:
        self._current.close()


class CameraStream(Stream):
    """A live camera through ``LiveCamera``: newest frame only, reopened with backoff when it fails.

    ``size``: the (width, height) the camera was asked for; a camera that
    delivers another size is named once in a warning, since each of its frames
    then costs more (or less) decoding and memory than the device planned for.
    """

    def __init__(self, camera: LiveCamera, kind: SourceKind, every: int, limit: int | None,
                 size: tuple[int, int] = CAPTURE_SIZE) -> None:
        super().__init__(kind, camera.name, limit)
        self.camera, self.every, self.limit, self.size = camera, every, limit, size
        self._delivered: tuple[int, int] | None = None
        self._used = 0  # frames yielded and not returned: what the limit counts

    @property
    def reconnecting(self) -> bool:
        return self.camera.reconnecting

    def __iter__(self) -> Iterator[Frame]:
        for seq, frame, arrived in self.camera.frames(self.every):
            if self.limit is not None and self._used >= self.limit:
                return
            self._check_size(frame)
            self._used += 1
            yield Frame(bgr_to_image(frame), None, f"{self.spec}#{seq}", arrived=arrived)

    def newer_frame_ready(self) -> bool:
        return self.camera.newer_frame_ready(self.every)

    def return_last(self) -> None:
        self._used -= 1

    def _check_size(self, frame: np.ndarray) -> None:
        delivered = (int(frame.shape[1]), int(frame.shape[0]))
        if delivered != self._delivered and delivered != self.size:
            log.warning("%s delivers %dx%d frames, not the %dx%d asked for (the memory plan counts %dx%d; "
                        "--camera-size sets both)", self.spec, *delivered, *self.size, *self.size)
        self._delivered = delivered

    def interrupt(self) -> None:
        self.camera.interrupt()

    def close(self) -> None:
        self.camera.close()


def opencv_opener(index: int, size: tuple[int, int] = CAPTURE_SIZE) -> Capture:
    """Open OpenCV camera ``index`` asking for ``size`` (width, height) frames, or raise ``BadInputError`` (missing
    device). A camera without that mode picks its nearest; ``CameraStream`` says so."""
    cv2 = import_cv2()
    capture = cv2.VideoCapture(index)
    if not capture.isOpened():
        capture.release()
        raise BadInputError(f"camera{index}: no camera at index {index} (is it connected and is /dev/video{index} "
                            "readable? `v4l2-ctl --list-devices` lists cameras)")
    capture.set(cv2.CAP_PROP_FRAME_WIDTH, size[0])
    capture.set(cv2.CAP_PROP_FRAME_HEIGHT, size[1])
    return capture


class Picamera2Capture:
    """picamera2 (Raspberry Pi camera stack) behind the ``Capture`` interface."""

    def __init__(self, size: tuple[int, int] = CAPTURE_SIZE) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError:
            raise BadInputError("picamera2 is not installed; on Raspberry Pi OS: sudo apt install python3-picamera2, "
                                "or use camera0 (OpenCV/V4L2)") from None
        self.camera = Picamera2()
        self.camera.configure(self.camera.create_preview_configuration(main={"format": "RGB888", "size": size}))
        self.camera.start()

    def read(self) -> tuple[bool, np.ndarray | None]:
        return True, self.camera.capture_array()  # libcamera's "RGB888" is B, G, R in memory: what bgr_to_image takes

    def release(self) -> None:
        self.camera.stop()
        self.camera.close()


# ---- the one entry point ------------------------------------------------------------------------


def _cap(total: int | None, limit: int | None) -> int | None:
    if total is None:
        return limit
    return total if limit is None else min(total, limit)


def open_stream(
    spec: str,
    every: int = 1,
    limit: int | None = None,
    labels_from: LabelsFrom | None = None,
    shuffle: int | None = None,
    reconnect: Backoff | None = None,
    *,
    loop: bool = False,
    realtime: bool = False,
    decode_size: DecodeSize | None = None,
    capture_size: tuple[int, int] = CAPTURE_SIZE,
) -> Stream:
    """Resolve ``spec`` into a stream (see the module docstring).

    ``labels_from``: None takes the labels the source has (sub-folders of a
    folder/zip, the manifest's column; none for cameras and videos); "dirs" or
    "manifest" insist on that kind of source. ``shuffle``: seed for a random
    order of a file source. ``reconnect``: camera reopen schedule. ``loop``:
    read a finite source again from the start whenever it ends (``limit``
    counts per pass). ``realtime``: play a video file at its frame rate.
    ``decode_size``: how small image files may be decoded (``decode_image``;
    a device passes its ``Preprocessor.decode_size``). ``capture_size``: the
    (width, height) a camera is asked for, and the memory plan counts (a
    video with larger frames is named in a warning).
    """
    capture_size = checked_frame_size(capture_size, "capture_size")
    if every < 1 or (limit is not None and limit < 1):
        raise BadInputError(f"every (keep every N-th frame) and limit must be >= 1 (got every={every}, limit={limit})")
    kind, target = _resolve_kind(spec)
    if loop:
        if kind in (SourceKind.CAMERA, SourceKind.PICAMERA2):
            raise BadInputError(f"only a finite source (a video, a folder, a zip, a manifest) can be looped; "
                                f"{spec} is a {kind.value}")
        return LoopedStream(lambda: open_stream(spec, every, limit, labels_from, shuffle, reconnect, realtime=realtime,
                                                decode_size=decode_size))
    natural = {SourceKind.FOLDER: "dirs", SourceKind.ZIP: "dirs", SourceKind.MANIFEST: "manifest"}.get(kind)
    if labels_from is not None and labels_from != natural:
        needs = "a folder or zip of class sub-folders" if labels_from == "dirs" else "a .csv/.jsonl manifest"
        raise BadInputError(f"labels from {labels_from} need {needs}; {spec} is a {kind.value} source")
    live = kind in (SourceKind.CAMERA, SourceKind.PICAMERA2, SourceKind.VIDEO)
    if live and shuffle is not None:
        raise BadInputError(f"shuffling only applies to folders, zips and manifests; {spec} is a {kind.value}")
    if kind is SourceKind.CAMERA:
        index = int(_CAMERA.fullmatch(spec).group(1))  # type: ignore[union-attr]
        camera = LiveCamera(spec, lambda: opencv_opener(index, capture_size), reconnect)
        return CameraStream(camera.start(), kind, every, limit, capture_size)
    if kind is SourceKind.PICAMERA2:
        camera = LiveCamera(spec, lambda: Picamera2Capture(capture_size), reconnect)
        return CameraStream(camera.start(), kind, every, limit, capture_size)
    if kind is SourceKind.VIDEO:
        return VideoStream(target, every, limit, realtime, capture_size)

    reader = FileReader()
    if kind is SourceKind.MANIFEST:
        items = manifest_items(target)
    elif kind is SourceKind.FOLDER:
        items = folder_items(target)
    elif kind is SourceKind.ZIP:
        zip_path, inner = split_zip_path(target)  # type: ignore[misc]
        items = zip_items(zip_path, inner, reader)
    else:
        items = [ImageItem(str(target), None)]
    if not items:
        raise BadInputError(f"{spec}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    if shuffle is not None:
        random.Random(shuffle).shuffle(items)
    return FileStream(kind, spec, items[::every][:limit], reader, decode_size)


def source_kind(spec: str) -> SourceKind:
    """What ``spec`` names, without opening it (no device is touched); ``BadInputError`` if nothing."""
    return _resolve_kind(spec)[0]


def _resolve_kind(spec: str) -> tuple[SourceKind, Path]:
    if _CAMERA.fullmatch(spec):
        return SourceKind.CAMERA, Path(spec)
    if spec == "picamera2":
        return SourceKind.PICAMERA2, Path(spec)
    path = Path(spec)
    if path.is_dir():
        return SourceKind.FOLDER, path
    if split_zip_path(path) is not None:
        return SourceKind.ZIP, path
    if not path.is_file():
        raise BadInputError(f"{spec}: no such file, folder or camera (streams: camera0, picamera2, a video, "
                            "an image folder, a .zip or a zip sub-folder, a .csv/.jsonl manifest)")
    suffix = path.suffix.lower()
    for kind, suffixes in ((SourceKind.MANIFEST, MANIFEST_SUFFIXES), (SourceKind.VIDEO, VIDEO_SUFFIXES),
                           (SourceKind.IMAGE, IMAGE_SUFFIXES)):
        if suffix in suffixes:
            return kind, path
    raise BadInputError(f"{spec}: unknown stream type {suffix!r}; expected a video ({', '.join(sorted(VIDEO_SUFFIXES))}), "
                        f"an image, a folder, a .zip or a manifest ({', '.join(sorted(MANIFEST_SUFFIXES))})")
