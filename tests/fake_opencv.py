"""``cv2`` as the camera opener uses it, for tests that open ``camera0`` without a camera."""

from __future__ import annotations

import numpy as np


class FakeOpenCV:
    """A capture that records what it was asked for and delivers black frames of its one ``mode`` (width,
    height), or of the size asked for when it has none."""

    CAP_PROP_FRAME_WIDTH, CAP_PROP_FRAME_HEIGHT = 3, 4

    def __init__(self, mode: tuple[int, int] | None = None) -> None:
        self.mode, self.asked = mode, {}

    def VideoCapture(self, index: int) -> FakeOpenCV:  # noqa: N802  (OpenCV's name)
        return self

    def isOpened(self) -> bool:  # noqa: N802
        return True

    def set(self, prop: int, value: float) -> bool:
        self.asked[prop] = value
        return True

    def read(self) -> tuple[bool, np.ndarray]:
        width, height = self.mode or (int(self.asked[self.CAP_PROP_FRAME_WIDTH]),
                                      int(self.asked[self.CAP_PROP_FRAME_HEIGHT]))
        return True, np.zeros((height, width, 3), np.uint8)

    def release(self) -> None:
        pass
