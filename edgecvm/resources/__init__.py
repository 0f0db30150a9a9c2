"""Where things are: data shipped inside the package (device profiles, export recipes, anchor files, the
built-in sample) and the user's cache.

Found with ``importlib.resources``, so they are there wherever the package is
installed (a wheel on a Pi, an editable checkout): nothing depends on the
current directory or on a source tree next to the package.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

_ROOT = files(__name__)


def _path(*parts: str) -> Path:
    # Installed packages are plain folders (never zipped: setuptools installs wheels unpacked), so the
    # Traversable is a real path that streams and ONNX Runtime can open.
    return Path(str(_ROOT.joinpath(*parts)))


def profiles_dir() -> Path:
    """The shipped device profiles, one ``NAME.yaml`` each."""
    return _path("profiles")


def recipe(name: str) -> Path:
    """An export recipe shipped with the package, e.g. ``lite0-224.yaml``."""
    return _path("recipes", name)


def recipes_dir() -> Path:
    return _path("recipes")


def anchors_file(name: str) -> Path:
    """A shipped anchor file or concept list, e.g. ``tiny-imagenet-200.anchors.npz``."""
    return _path("anchors", name)


def sample_dir() -> Path:
    """The built-in 10-class sample: ``train/<concept>/`` (40 images each) and ``val/<concept>/`` (10 each)."""
    return _path("samples", "tiny10")


def shipped_or_path(kind: str, name_or_path: str | Path, suffix: str) -> Path:
    """A file that exists, or a shipped one by name: ``lite0-224`` -> ``recipes/lite0-224.yaml``.

    ``kind`` is the folder ("recipes", "anchors"), ``suffix`` its files' ending. A
    name that is neither comes back unchanged, for the caller's "not found" error.
    """
    path = Path(name_or_path)
    if path.exists() or path.name != str(name_or_path):
        return path
    shipped = _path(kind, path.name if path.name.endswith(suffix) else path.name + suffix)
    return shipped if shipped.is_file() else path


def shipped_names(kind: str, suffix: str) -> list[str]:
    """The names ``shipped_or_path`` resolves, sorted."""
    return sorted(p.name[: -len(suffix)] for p in _path(kind).glob(f"*{suffix}"))


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/edgecvm``, or ``~/.cache/edgecvm`` when it is unset (or relative, as the XDG spec says).

    Why: what edgecvm makes for a user (a data set's features, ~250 MB; a default
    bundle) belongs in the user's cache, not in whatever folder a command ran
    from, nor next to the installed package.
    """
    root = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(root) if os.path.isabs(root) else Path.home() / ".cache") / "edgecvm"
