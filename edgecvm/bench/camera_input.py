"""Camera-shaped bench input, generated reproducibly from the built-in sample into the user's cache.

A camera delivers 640 x 480 (or larger) frames, whose decode and resize cost
far more than the sample's 64 x 64 px JPEGs, so the bench measures on the
sample's training images made camera-sized: each upscaled (bicubic) to
640 x 640, centre-cropped to 640 x 480 and saved as a quality-90 JPEG, in the
same class folders (a labelled source, for ``learn``). The same frames as a
30 frames/s Motion-JPEG AVI stand in for a live camera when latency from a
frame's arrival to its answer is measured: OpenCV (the ``camera`` extra, the
decoder a device reading a camera has) writes and reads Motion-JPEG with its
own built-in codec, so no FFmpeg build is needed on either side.

Files are written to a temporary name and renamed, so an interrupted run never
leaves a half-written input behind; the same code always writes the same
pixels (PIL's resize and encoder are deterministic for a given Pillow).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from edgecvm import resources
from edgecvm.device.frame_size import CAPTURE_SIZE
from edgecvm.device.streams import import_cv2

JPEG_QUALITY = 90
VIDEO_FPS = 30
VIDEO_FRAMES = 150  # 5 s at 30 frames/s


def _camera_frame(path: Path, size: tuple[int, int]) -> Image.Image:
    width, height = size
    side = max(width, height)
    square = Image.open(path).convert("RGB").resize((side, side), Image.Resampling.BICUBIC)
    left, top = (side - width) // 2, (side - height) // 2
    return square.crop((left, top, left + width, top + height))


def _sample_images() -> list[Path]:
    return sorted((resources.sample_dir() / "train").glob("*/*.JPEG"))


def camera_sample(size: tuple[int, int] = CAPTURE_SIZE) -> Path:
    """The sample's training images at ``size`` as JPEGs in class folders (created on first use)."""
    width, height = size
    folder = resources.user_cache_dir() / "bench" / f"tiny10-train-{width}x{height}-q{JPEG_QUALITY}"
    if folder.is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        for path in _sample_images():
            (tmp / path.parent.name).mkdir(exist_ok=True)
            _camera_frame(path, size).save(tmp / path.parent.name / path.name, "JPEG", quality=JPEG_QUALITY)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def camera_video(size: tuple[int, int] = CAPTURE_SIZE, frames: int = VIDEO_FRAMES) -> Path:
    """The first ``frames`` sample images (sorted, so every class shows) at ``size`` as a 30 frames/s
    Motion-JPEG AVI (created on first use; needs OpenCV, ``BadInputError`` without it)."""
    cv2 = import_cv2()
    width, height = size
    path = resources.user_cache_dir() / "bench" / f"tiny10-{width}x{height}-{VIDEO_FPS}fps-{frames}.avi"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    images = _sample_images()
    images = [images[i * len(images) // frames] for i in range(frames)]
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".avi", dir=path.parent)
    os.close(fd)
    try:
        writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*"MJPG"), VIDEO_FPS, (width, height))
        for image in images:
            rgb = _camera_frame(image, size)
            writer.write(cv2.cvtColor(np.asarray(rgb), cv2.COLOR_RGB2BGR))
        writer.release()
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
