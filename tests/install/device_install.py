"""Helpers of the device-install test: build the wheel, make a device-only venv, run commands in it.

Nothing here touches the checkout: the source is copied before the wheel is
built (an in-tree setuptools build writes ``build/`` and ``*.egg-info`` into
the checkout, and a stale ``build/lib`` can put files into the wheel that the
package data no longer ships, hiding exactly the bug this test is for).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "edgecvm"
RESOURCES = PACKAGE / "resources"
SAMPLES = RESOURCES / "samples" / "tiny10"

README_MARKER = "<!-- tested: python-api -->"
# Workstation-only packages (the export, camera and plot extras): a device install must not have them.
FORBIDDEN_MODULES = ("torch", "onnx", "onnxscript", "sentence_transformers", "cv2", "matplotlib")

# Top-level checkout entries that are not part of the package build.
_NOT_SOURCE = {"build", "dist", "export", "tests", "docs", "tools"}


@dataclass
class Done:
    args: list[str]
    code: int
    stdout: str
    stderr: str

    def explain(self) -> str:
        return (f"`{' '.join(self.args)}` exited {self.code}\n--- stderr ---\n{self.stderr[-6000:]}"
                f"\n--- stdout ---\n{self.stdout[-3000:]}")


def run(args: list[str | os.PathLike[str]], cwd: Path, env: dict[str, str] | None = None,
        timeout: float = 300) -> Done:
    argv = [str(a) for a in args]
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return Done(argv, done.returncode, done.stdout, done.stderr)


def device_requirements(pyproject: Path = REPO / "pyproject.toml") -> list[str]:
    """The [project] dependencies: what a device installs, nothing from the extras."""
    return list(tomllib.loads(pyproject.read_text())["project"]["dependencies"])


def requirement_name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[(]", requirement, maxsplit=1)[0]


def shipped_profiles() -> list[str]:
    return sorted(p.stem for p in (RESOURCES / "profiles").glob("*.yaml"))


def shipped_resource_files() -> list[str]:
    """Every data file under edgecvm/resources in the checkout, as wheel member names."""
    return sorted(p.relative_to(REPO).as_posix() for p in RESOURCES.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")


def copy_source(dest: Path) -> Path:
    """The checkout's package sources (working tree, not only what is committed), without build leftovers."""
    def ignore(folder: str, names: list[str]) -> set[str]:
        skipped = {n for n in names if n == "__pycache__" or n.endswith((".pyc", ".egg-info"))}
        if Path(folder) == REPO:
            skipped |= {n for n in names if n.startswith(".") or n in _NOT_SOURCE}
        return skipped

    shutil.copytree(REPO, dest, ignore=ignore)
    return dest


def build_wheel(source: Path, out: Path, cwd: Path) -> Path:
    """``pip wheel --no-deps --no-build-isolation`` with this (dev) interpreter: no build dependency is fetched."""
    # Absolute paths: pip reads a bare relative name ("src") as a requirement to fetch from the index.
    done = run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                "--disable-pip-version-check", "-w", out.resolve(), source.resolve()], cwd=cwd, timeout=300)
    assert done.code == 0, "building the wheel failed: " + done.explain()
    wheels = sorted(out.glob("edgecvm-*.whl"))
    assert len(wheels) == 1, f"expected one edgecvm wheel in {out}, found {[w.name for w in wheels]}"
    return wheels[0]


def clean_env(venv: Path) -> dict[str, str]:
    """The environment of a device shell: the venv first on PATH, nothing pointing into the checkout."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTHONSAFEPATH")}
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and not _inside(Path(p), REPO)]
    env.update(PATH=os.pathsep.join([str(venv / "bin"), *path]), VIRTUAL_ENV=str(venv), PYTHONNOUSERSITE="1",
               PYTHONUNBUFFERED="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder)
    except (OSError, ValueError):
        return False
    return True


def copy_samples(dest: Path, split: str, per_class: int | None, layout: str = "{concept}/{name}") -> Path:
    """``per_class`` images of each concept of the shipped sample's ``split`` (all when None), copied to ``dest``."""
    for folder in sorted((SAMPLES / split).iterdir()):
        for image in sorted(folder.iterdir())[:per_class]:
            target = dest / layout.format(concept=folder.name, name=image.name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(image, target)
    return dest


def readme_python_example(readme_text: str) -> str:
    """The first ```python block after the first line holding the marker ``<!-- tested: python-api -->``.

    Raises LookupError when the README has no marker yet, ValueError when a
    marker is not followed by a complete ```python block.
    """
    lines = readme_text.splitlines()
    start = next((i for i, line in enumerate(lines) if README_MARKER in line), None)
    if start is None:
        raise LookupError(f"README.md has no {README_MARKER} line")
    fence = next((i for i in range(start + 1, len(lines)) if lines[i].strip().startswith("```python")), None)
    if fence is None:
        raise ValueError(f"README.md: no ```python block after the {README_MARKER} line (line {start + 1})")
    indent = lines[fence][: len(lines[fence]) - len(lines[fence].lstrip())]
    body: list[str] = []
    for line in lines[fence + 1:]:
        if line.strip() == "```":
            return "\n".join(ln[len(indent):] if ln.startswith(indent) else ln for ln in body) + "\n"
        body.append(line)
    raise ValueError(f"README.md: the ```python block at line {fence + 1} is never closed")
