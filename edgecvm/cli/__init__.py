"""The ``edgecvm`` command: one sub-command per module, errors as one line + exit code.

Each command module exposes ``register(subparsers)``, which adds its parser and
sets ``func`` (``args -> int``). Command modules keep heavy imports (torch,
sentence-transformers, onnx) inside their functions so ``edgecvm --help`` and
the device-side commands start fast and work without the export extra.

Exit codes: 0 ok, 2 bad input/config, 3 memory budget exceeded, 4 stream lost,
130 interrupted (after a clean checkpoint where there was state to save).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from edgecvm import __version__
from edgecvm.errors import EdgeCVMError

# command -> its module. Order here is the order in `edgecvm --help`: the data path, offline to device.
COMMANDS = {
    "anchors": "edgecvm.cli.anchors",
    "export": "edgecvm.cli.export",
    "learn": "edgecvm.cli.learn",
    "predict": "edgecvm.cli.predict",
    "profiles": "edgecvm.cli.profiles",
    "bench": "edgecvm.bench.run",
    "eval": "edgecvm.cli.eval",
}


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; when ``argv`` names a command, only that command's module is imported.

    Why: the device commands run for days in a memory budget. Importing the
    evaluation, benchmark and export modules (and the standard library they
    pull in) for ``learn`` cost ~2 MB of RSS and start-up time for nothing.
    """
    parser = argparse.ArgumentParser(
        prog="edgecvm",
        description="Continual Visual Mapping on small devices: learn new visual concepts "
        "from a camera, offline, without forgetting. Run `edgecvm COMMAND --help` for each command.",
    )
    parser.add_argument("--version", action="version", version=f"edgecvm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    first = next((a for a in argv or () if not a.startswith("-")), None)
    for name, module_name in COMMANDS.items():
        if first in COMMANDS and name != first:
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # command not built yet in this checkout
                continue
            raise
        module.register(sub)
    return parser


class _WarningFormatter(logging.Formatter):
    """Library warnings (bad frames, failed checkpoints, missing providers) as ``edgecvm: warning: ...`` lines."""

    def format(self, record: logging.LogRecord) -> str:
        return f"edgecvm: {record.levelname.lower()}: {record.getMessage()}"


def _log_warnings_to_stderr() -> None:
    root = logging.getLogger()
    if not root.handlers:  # a host application (or pytest) that configured logging keeps its own setup
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_WarningFormatter())
        root.addHandler(handler)
        root.setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    _log_warnings_to_stderr()
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except EdgeCVMError as exc:
        print(f"edgecvm: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("edgecvm: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
