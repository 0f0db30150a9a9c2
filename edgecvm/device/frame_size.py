"""The size of the frames a device takes in: what a camera is asked for, and what the memory plan counts.

Kept apart from the camera code (numpy, OpenCV) so that command-line option
defaults can name it without importing either.
"""

from __future__ import annotations

from edgecvm.errors import BadInputError

# VGA: a mode nearly every camera has, and its 480 px short side holds more detail than a 224 px model input
# uses (the centre crop the model sees is 420 px across), so asking a camera for more costs decoding and memory
# per frame and buys nothing (docs/benchmarks.md).
CAPTURE_SIZE: tuple[int, int] = (640, 480)  # (width, height)
MAX_SIDE = 4096  # the largest camera or generated frame side an option accepts


def checked_frame_size(size: tuple[int, int], what: str) -> tuple[int, int]:
    """``size`` as (width, height) whole numbers of 1 to ``MAX_SIDE`` px; ``BadInputError`` naming ``what`` if not."""
    try:
        width, height = (int(side) for side in size)
        valid = all(float(given) == side for given, side in zip(size, (width, height), strict=True))
    except (TypeError, ValueError):
        valid = False
    if not valid or not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        raise BadInputError(f"{what} must be (width, height) in whole pixels of 1-{MAX_SIDE}, got {size!r}")
    return width, height
