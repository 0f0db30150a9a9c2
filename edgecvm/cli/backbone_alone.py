"""``python -m edgecvm.cli.backbone_alone``: `edgecvm bench`'s ceiling, the backbone session alone, as its own process.

The session's speed depends on the process around it, not only on its
options: with the heap trimmed as the commands trim it, every run of a
session without ORT's arena maps and zeroes its activations afresh, and how
often that happens depends on what else the process allocated before. The
bench process has decoded, preprocessed and learned from frames by then; a
``predict`` process has not. So the ceiling is measured in a fresh process
opened exactly as ``predict`` opens its device (``open_device`` with the
process tuned), then run on frames preprocessed beforehand. It prints one
JSON line (frames/s, CPU seconds per frame) on stdout, or one error line and
the exit code. The loop itself is edgecvm.bench.measure.time_backbone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edgecvm.bench.measure import time_backbone
from edgecvm.device.device import open_device
from edgecvm.errors import EdgeCVMError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgecvm.cli.backbone_alone",
                                     description="The backbone session alone, opened as `edgecvm predict` opens it, "
                                                 "on preprocessed frames (one JSON line).")
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--profile", required=True, help="a profile name or YAML (the bench's measured profile)")
    parser.add_argument("--stream", required=True, help="the bench's frame manifest; its first frames are the inputs")
    parser.add_argument("--frames", type=int, required=True, help="backbone runs to time")
    args = parser.parse_args(argv)
    try:
        device = open_device(args.bundle, args.profile, None, read_only=True, tune_process=True)
        fps, cpu_s = time_backbone(device.extractor, Path(args.stream), args.frames)
    except EdgeCVMError as exc:
        print(f"edgecvm: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps({"frames_per_s": round(fps, 2), "cpu_s_per_frame": round(cpu_s, 5)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
