"""``python -m edgecvm.cli.torch_ref``: the torch reference learner of `edgecvm bench`, as its own process.

The bench starts it as a child so the reference's peak RSS (torch alone is
~300 MB) is measured apart from everything else; it prints one JSON line
(frames, seconds, frames/s) on stdout, or one error line and the exit code.
The loop itself is edgecvm.bench.torch_ref.run_reference.
"""

from __future__ import annotations

import argparse
import json
import sys

from edgecvm.bench.torch_ref import run_reference
from edgecvm.errors import EdgeCVMError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgecvm.cli.torch_ref",
                                     description="The torch reference learner of `edgecvm bench` (one JSON line).")
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--stream", required=True, help="a labelled source (the bench's frame manifest)")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--replay-bytes", type=int, required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    args = parser.parse_args(argv)
    try:
        result = run_reference(args.bundle, args.stream, args.threads, args.replay_bytes, args.batch_size)
    except EdgeCVMError as exc:
        print(f"edgecvm: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
