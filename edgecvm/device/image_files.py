"""Images stored as files: where a file source's images are, what they are labelled, how to read them.

Three listings (a folder tree, a zip or a folder inside one, a manifest) give
``ImageItem``s in a deterministic order, labelled by each image's parent
folder or the manifest's column; ``FileReader`` reads an item's bytes
whether it is a plain file or a zip member (``data.zip/a/b.jpg``), and
``decode_image`` turns bytes into an RGB image or a reason it cannot be used.
"""

from __future__ import annotations

import csv
import io
import json
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from edgecvm.device.preprocess import to_rgb
from edgecvm.errors import BadInputError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
# A 40 MP frame decodes to 120 MB of RGB: more than a small device can spare. Counted as decoded, so a larger JPEG
# that ``decode_size`` lets the decoder scale down is accepted.
MAX_FRAME_PIXELS = 40_000_000
# (width, height) -> the smallest size worth decoding that frame at (``Preprocessor.decode_size``)
DecodeSize = Callable[[int, int], tuple[int, int]]


def decode_image(data: bytes, decode_size: DecodeSize | None = None) -> tuple[Image.Image | None, str | None]:
    """Bytes -> (RGB image, None) or (None, why it cannot be used).

    ``decode_size``: a JPEG is decoded at 1/2, 1/4 or 1/8 of its size when
    that is still at least ``decode_size(width, height)`` (other formats are
    decoded whole); ``MAX_FRAME_PIXELS`` applies to the decoded size."""
    if not data:
        return None, "empty file (0 bytes)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if decode_size is not None:
                wanted = decode_size(width, height)
                if wanted[0] < width and wanted[1] < height:
                    image.draft(None, wanted)  # JPEG only: the largest DCT scaling that keeps >= ``wanted``
            if image.size[0] * image.size[1] > MAX_FRAME_PIXELS:
                decoded = "" if image.size == (width, height) else f", {image.size[0]}x{image.size[1]} decoded"
                return None, f"image too large ({width}x{height} pixels{decoded} > {MAX_FRAME_PIXELS:,})"
            image.load()
            return to_rgb(image), None
    except Exception as exc:  # PIL's format plugins raise a zoo of types on malformed input; all mean "unusable"
        return None, f"cannot decode image ({type(exc).__name__}: {exc})"


def split_zip_path(path: Path) -> tuple[Path, str] | None:
    """``data.zip/a/b.jpg`` -> (data.zip, "a/b.jpg"); ``data.zip`` -> (data.zip, ""); None if no zip is involved."""
    if path.exists() and not (path.is_file() and path.suffix.lower() == ".zip"):
        return None
    for candidate in (path, *path.parents):
        if candidate.suffix.lower() == ".zip" and candidate.is_file():
            inner = path.relative_to(candidate).as_posix()
            return candidate, "" if inner == "." else inner
    return None


class FileReader:
    """Reads a file or a zip member named like a file; keeps zips open for random access."""

    def __init__(self) -> None:
        self._zips: dict[Path, zipfile.ZipFile] = {}

    def open_zip(self, path: Path) -> zipfile.ZipFile:
        if path not in self._zips:
            try:
                self._zips[path] = zipfile.ZipFile(path)
            except (OSError, zipfile.BadZipFile) as exc:
                raise BadInputError(f"{path}: cannot open zip ({exc})") from None
        return self._zips[path]

    def read(self, origin: str) -> bytes:
        located = split_zip_path(Path(origin))
        if located is None:
            return Path(origin).read_bytes()
        return self.open_zip(located[0]).read(located[1])

    def close(self) -> None:
        for zf in self._zips.values():
            zf.close()
        self._zips.clear()


@dataclass(frozen=True)
class ImageItem:
    origin: str
    label: str | None


def _is_image_name(name: str) -> bool:
    parts = name.split("/")
    hidden = any(p.startswith(".") or p == "__MACOSX" for p in parts)
    return not hidden and Path(name).suffix.lower() in IMAGE_SUFFIXES


def folder_items(root: Path) -> list[ImageItem]:
    """Every image below ``root`` in sorted path order, labelled by its parent folder."""
    names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    return [ImageItem(str(root / name), _parent_label(name))
            for name in names if _is_image_name(name)]


def _parent_label(relative: str) -> str | None:
    """Immediate parent folder of a path relative to the source root (None for files at the root)."""
    parts = relative.split("/")
    return parts[-2] if len(parts) > 1 else None


def zip_items(zip_path: Path, inner: str, reader: FileReader) -> list[ImageItem]:
    """Every image in the zip below folder ``inner``, sorted, labelled by its parent folder (wnids named)."""
    zf = reader.open_zip(zip_path)
    prefix = f"{inner}/" if inner else ""
    members = sorted(i.filename for i in zf.infolist() if not i.is_dir() and i.filename.startswith(prefix))
    if inner and not members:
        raise BadInputError(f"{zip_path}: no folder {inner!r} inside the zip")
    names = _zip_synonyms(zf, prefix)
    items = []
    for member in members:
        if _is_image_name(member):
            label = _parent_label(member[len(prefix):])
            items.append(ImageItem(f"{zip_path}/{member}", names.get(label, label) if label else None))
    return items


def _zip_synonyms(zf: zipfile.ZipFile, prefix: str) -> dict[str, str]:
    """WordNet id -> first synonym, from the ``words.txt`` nearest the selected folder (Tiny-ImageNet layout)."""
    candidates = [n for n in zf.namelist() if n.rsplit("/", 1)[-1] == "words.txt"
                  and (prefix.startswith(n[: -len("words.txt")]) or n.startswith(prefix))]
    if not candidates:
        return {}
    chosen = min(candidates, key=lambda n: (n.count("/"), n))
    mapping = {}
    for line in zf.read(chosen).decode("utf-8", errors="replace").splitlines():
        key, _, synonyms = line.partition("\t")
        if key.strip() and synonyms.strip():
            mapping[key.strip()] = synonyms.split(",")[0].strip()
    return mapping


def manifest_items(path: Path) -> list[ImageItem]:
    """``path,label`` CSV (header optional) or JSONL ``{"path": ..., "label": ...}``; paths relative to the file."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{path}: cannot read manifest ({exc})") from None
    jsonl = path.suffix.lower() in (".jsonl", ".ndjson")
    items = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        file, label = _manifest_json_row(path, lineno, line) if jsonl else _manifest_csv_row(path, lineno, line)
        if file is None:
            continue  # the CSV header
        full = Path(file) if Path(file).is_absolute() else path.parent / file
        items.append(ImageItem(str(full), label or None))
    if not items:
        raise BadInputError(f"{path}: manifest lists no images")
    return items


def _manifest_csv_row(path: Path, lineno: int, line: str) -> tuple[str | None, str | None]:
    row = next(csv.reader([line]))
    if lineno == 1 and [c.strip().lower() for c in row] in (["path", "label"], ["path"]):
        return None, None
    if len(row) not in (1, 2) or not row[0].strip():
        raise BadInputError(f"{path}:{lineno}: expected 'path,label' (label optional), got {line!r}")
    return row[0].strip(), (row[1].strip() if len(row) == 2 else None)


def _manifest_json_row(path: Path, lineno: int, line: str) -> tuple[str, str | None]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise BadInputError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from None
    if not isinstance(row, dict) or not isinstance(row.get("path"), str) or set(row) - {"path", "label"}:
        raise BadInputError(f"{path}:{lineno}: expected {{\"path\": str, \"label\": str}} only, got {line.strip()!r}")
    label = row.get("label")
    if label is not None and not isinstance(label, str):
        raise BadInputError(f"{path}:{lineno}: label must be a string, got {label!r}")
    return row["path"], label
