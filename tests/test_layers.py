"""The package's layers, read from the import graph: what each subpackage may import, and who may print.

formats <- learning <- device <- offline / eval / bench / serve / fleet <- cli: a layer imports
only from layers below it (and the standard library and the third-party
modules listed for it), so the device side installs and runs without the
offline side's torch, onnx or sentence-transformers, and only the CLI talks to
the terminal. Imports under ``if TYPE_CHECKING:`` are not run and are not counted.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "edgecvm"
BASE = {"errors", "resources", "reporting"}  # stdlib-only modules any layer may use
DEVICE_THIRD_PARTY = {"numpy", "PIL", "yaml", "onnxruntime", "tokenizers", "cv2", "picamera2"}
SERVE_THIRD_PARTY = DEVICE_THIRD_PARTY | {"starlette", "uvicorn", "multipart", "python_multipart"}
FLEET_THIRD_PARTY = DEVICE_THIRD_PARTY | {"flwr"}
# layer -> (edgecvm layers it may import, third-party top-level modules it may import; None: any)
RULES: dict[str, tuple[set[str], set[str] | None]] = {
    "base": (BASE, set()),
    "formats": (BASE | {"formats"}, {"numpy"}),
    "learning": (BASE | {"formats", "learning"}, {"numpy"}),
    "device": (BASE | {"formats", "learning", "device"}, DEVICE_THIRD_PARTY),
    "offline": (BASE | {"formats", "learning", "device", "offline"}, None),
    "eval": (BASE | {"formats", "learning", "device", "offline", "eval"}, None),
    "bench": (BASE | {"formats", "learning", "device", "offline", "eval", "bench"}, None),
    "serve": (BASE | {"formats", "learning", "device", "serve"}, SERVE_THIRD_PARTY),  # the device's web page
    "fleet": (BASE | {"formats", "learning", "device", "fleet"}, FLEET_THIRD_PARTY),  # Flower apps and programs
    "cli": (BASE | {"formats", "learning", "device", "offline", "eval", "bench", "serve", "fleet", "cli"}, None),
}
OFFLINE_ONLY = {"torch", "onnx", "onnxscript", "sentence_transformers", "transformers", "skimage", "matplotlib"}


def layer_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return "base" if len(parts) == 1 or parts[0] in BASE else parts[0]


def modules() -> list[Path]:
    skip = {"__init__.py", "__main__.py"}  # the package facade: lazy re-exports of the public API
    return sorted(p for p in PACKAGE.rglob("*.py") if not (p.parent == PACKAGE and p.name in skip))


def runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            stack.extend(node.orelse)
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def imported(path: Path) -> Iterator[str]:
    for node in runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "edgecvm":
                yield from (f"edgecvm.{alias.name}" for alias in node.names)
            else:
                yield node.module


def target_layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "facade"
    return "base" if parts[1] in BASE | {"__version__"} else parts[1]


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_layers(path: Path) -> None:
    layer = layer_of(path)
    allowed_layers, allowed_third_party = RULES[layer]
    allowed_layers = {"base" if name in BASE else name for name in allowed_layers}
    for module in imported(path):
        top = module.split(".")[0]
        if top == "edgecvm":
            assert target_layer(module) in allowed_layers, f"{layer} may not import {module}"
        elif top not in sys.stdlib_module_names and top != "__future__":
            assert top not in OFFLINE_ONLY or layer not in ("base", "formats", "learning", "device", "serve", "fleet"), \
                f"{layer} may not import {module} (offline only)"
            if allowed_third_party is not None:
                assert top in allowed_third_party, f"{layer} may not import {module}"


@pytest.mark.parametrize("path", [p for p in modules() if layer_of(p) != "cli"],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_the_cli_parses_arguments_or_prints(path: Path) -> None:
    tree = ast.parse(path.read_text())
    assert "argparse" not in set(imported(path)), f"{path.name} imports argparse"
    prints = [node.lineno for node in ast.walk(tree)
              if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"]
    assert not prints, f"{path.name} prints (lines {prints})"
    writes = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Attribute)
              and node.attr in ("stdout", "stderr") and isinstance(node.value, ast.Name) and node.value.id == "sys"]
    assert not writes, f"{path.name} uses sys.stdout/sys.stderr (lines {writes})"


def test_the_rules_see_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\nfrom edgecvm.cli.common import json_line\nprint('x')\n")
    assert set(imported(bad)) == {"torch", "edgecvm.cli.common"}
    assert target_layer("edgecvm.cli.common") == "cli" and "cli" not in RULES["device"][0]


def test_nothing_computes_a_path_from_the_checkout() -> None:
    offenders = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                 if "parent.parent" in p.read_text() or "parents[" in p.read_text()]
    assert not offenders
