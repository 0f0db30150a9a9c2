"""The size of the frames a device takes in: what a camera is asked for, and what the memory plan counts.

Kept apart from the camera code (numpy, OpenCV) so that command-line option
defaults can name it without importing either.
"""

from __future__ import annotations

# VGA: a mode nearly every camera has, and its 480 px short side holds more detail than a 224 px model input
# uses (the centre crop the model sees is 420 px across), so asking a camera for more costs decoding and memory
# per frame and buys nothing (docs/benchmarks.md).
CAPTURE_SIZE: tuple[int, int] = (640, 480)  # (width, height)
MAX_SIDE = 4096  # the largest camera or generated frame side an option accepts
