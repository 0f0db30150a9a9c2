"""Preprocessing: the fast path gives the pixels of the plain resize, crop, normalise recipe."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgecvm.device.preprocess import Preprocessor

LITE0_224 = Preprocessor(224, 256, "bilinear", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def reference(pre: Preprocessor, image: Image.Image) -> np.ndarray:
    """The plain recipe: resize the shorter side, crop the centre, scale, normalise."""
    new_w, new_h = pre.resized_size(*image.size)
    resized = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    left, top = (new_w - pre.input_size) // 2, (new_h - pre.input_size) // 2
    crop = resized.crop((left, top, left + pre.input_size, top + pre.input_size))
    arr = (np.asarray(crop, np.float32) * (1.0 / 255.0) - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)
    return arr.transpose(2, 0, 1)


@pytest.fixture(scope="module")
def sample(samples_dir: Path) -> list[Image.Image]:
    return [Image.open(p).convert("RGB") for p in sorted((samples_dir / "val").glob("*/*.JPEG"))[::10]]


def test_sample_images_get_exactly_the_reference_pixels(sample) -> None:
    # The eval feature cache is keyed by backbone and mean/std: its 64 px inputs must not change at all.
    for image in sample:
        np.testing.assert_array_equal(LITE0_224(image), reference(LITE0_224, image))
    batch = LITE0_224.batch(sample[:3])
    assert batch.shape == (3, 3, 224, 224) and batch.flags.c_contiguous
    np.testing.assert_array_equal(batch[2], reference(LITE0_224, sample[2]))


def test_camera_sized_frames_are_within_one_level_of_the_reference(sample) -> None:
    for image in sample[:4]:
        frame = image.resize((640, 480), Image.Resampling.BICUBIC)
        assert np.abs(LITE0_224(frame) - reference(LITE0_224, frame)).max() <= 2.5 / 127.5  # two 8-bit levels


@pytest.mark.parametrize("size", [(640, 480), (1280, 720), (1920, 1080), (4032, 3024), (3024, 4032), (300, 200)])
def test_decode_size_keeps_twice_the_input_across_the_crop(size: tuple[int, int]) -> None:
    width, height = size
    wanted = LITE0_224.decode_size(width, height)
    assert wanted[0] <= width and wanted[1] <= height
    # Any frame of at least ``wanted`` still has >= 2 x 224 px across its centre crop.
    crop = min(wanted) * LITE0_224.input_size / LITE0_224.resize
    assert crop >= 2 * LITE0_224.input_size or wanted == size


def fits(size: tuple[int, int], wanted: tuple[int, int]) -> bool:
    return size[0] >= wanted[0] and size[1] >= wanted[1]


def test_decode_size_allows_a_smaller_decode_only_where_twice_the_input_is_left() -> None:
    assert LITE0_224.decode_size(640, 480) == (640, 480)  # a camera frame is decoded whole at 224 px
    assert not fits((640, 360), LITE0_224.decode_size(1280, 720))  # half of 720p would leave 1.4 x 224 px
    assert fits((960, 540), LITE0_224.decode_size(1920, 1080))
    assert not fits((480, 270), LITE0_224.decode_size(1920, 1080))
    assert fits((1008, 756), LITE0_224.decode_size(4032, 3024))  # a 12 MP photo: a quarter
    lite0_160 = Preprocessor(160, 182, "bilinear", (0.5,) * 3, (0.5,) * 3)
    assert not fits((640, 360), lite0_160.decode_size(1280, 720))  # half would leave 1.98 x 160 px
    assert fits((960, 540), lite0_160.decode_size(1920, 1080))
