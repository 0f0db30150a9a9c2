"""A flaky camera for the camera-loss tests: works, dies mid-stream, maybe comes back.

``FlakyCamera.open`` stands in for ``streams.opencv_opener``: it hands out a
capture that delivers ``fail_after`` frames at ~60 fps and then raises from
``read`` (a knocked USB cable). While the device is down, opening it fails
like a missing ``/dev/video0``; after ``down_s`` seconds (never if None) it
opens again and delivers frames.

Run as a script it is `edgecvm` with camera0 replaced by this camera
(``FAIL_AFTER`` and ``DOWN_S`` from the environment), so a real subprocess
can be checked for its exit code, one-line error and lack of traceback.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import numpy as np

from edgecvm.errors import BadInputError

FRAME_INTERVAL_S = 1 / 60


class FlakyCamera:
    def __init__(self, fail_after: int, down_s: float | None, seed: int = 0) -> None:
        self.fail_after, self.down_s = fail_after, down_s
        self.rng = np.random.default_rng(seed)
        self.delivered = 0
        self.opens = 0
        self.down_since: float | None = None
        self._lock = threading.Lock()

    def open(self, _index: int = 0, _size: tuple[int, int] | None = None) -> FlakyCamera.Capture:  # one mode only
        with self._lock:
            if self.down_since is not None:
                if self.down_s is None or time.monotonic() - self.down_since < self.down_s:
                    raise BadInputError("camera0: no camera at index 0 (simulated unplugged device)")
                self.down_since = None
            self.opens += 1
            return FlakyCamera.Capture(self)

    class Capture:
        def __init__(self, camera: FlakyCamera) -> None:
            self.camera = camera

        def read(self) -> tuple[bool, np.ndarray | None]:
            time.sleep(FRAME_INTERVAL_S)
            camera = self.camera
            with camera._lock:
                if camera.down_since is not None:
                    raise OSError("device disconnected")
                if camera.delivered and camera.delivered % camera.fail_after == 0 and camera.opens == 1:
                    camera.down_since = time.monotonic()
                    raise OSError("USB cable knocked out (simulated)")
                camera.delivered += 1
            return True, camera.rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)

        def release(self) -> None:
            pass


def main() -> int:
    import edgecvm.device.streams
    from edgecvm.cli import main as edgecvm_main

    down = os.environ.get("DOWN_S")
    camera = FlakyCamera(int(os.environ["FAIL_AFTER"]), float(down) if down else None)
    edgecvm.device.streams.opencv_opener = camera.open
    return edgecvm_main(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
