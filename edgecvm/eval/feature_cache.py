"""Backbone features of a labelled image set, extracted once and cached on disk (host-side evaluation).

Every method the evaluation compares trains on the same frozen features, so
running the backbone once per image is enough. The cache lives in
``<cache root>/features/<backbone key>/<data key>/`` (the CLI's root is the
user's cache folder, see cli/eval.py) as checksummed
containers of up to ``CHUNK`` images each; an interrupted extraction resumes
from the last finished chunk.

Keys: features depend only on the backbone graph and the preprocessing, so
the backbone key hashes the bundle's ``backbone.onnx`` sha256, the
manifest's preprocessing fields and how small the device decodes a large
JPEG. Re-exporting the head or the anchors (which
changes the bundle's own hash) does not force a re-extraction, a new graph
or mean/std does. The data key hashes every image's name, size and CRC (zip)
or name, size and mtime (folder).

Speed (host, 2 shared cores, Lite0 224 px): the ORT CPU arena, which the
device profiles switch off to save RSS, is switched on here: batch-1 runs go
from ~40 to ~100 images/s. Batches larger than 8 were slower (32: 72/s,
64: 52/s). Decoding and preprocessing run in a thread, overlapping the
backbone. See docs/results.md for the measured end-to-end time.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import re
import threading
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecvm.device.image_files import (
    FileReader,
    ImageItem,
    decode_image,
    folder_items,
    split_zip_path,
    zip_items,
)
from edgecvm.device.preprocess import DECODE_MARGIN, Preprocessor
from edgecvm.device.profiles import DeviceProfile
from edgecvm.errors import BadInputError, IntegrityError
from edgecvm.formats.bundle import Bundle
from edgecvm.formats.integrity import load_container, new_sha256, save_container
from edgecvm.reporting import ProgressFactory, silent

log = logging.getLogger("edgecvm.eval.feature_cache")

CACHE_FORMAT = "edgecvm.features"
CACHE_VERSION = 1
CHUNK = 2500  # images per cache file: ~12.8 MB of float32 features, about half a minute of extraction
BATCH = 8  # images per backbone run (see module docstring)
SPLITS = ("train", "val")
_FIX = "delete that cache folder and run the evaluation again to re-extract"
_TRAILING_INT = re.compile(r"(\d+)$")


@dataclass(frozen=True)
class LabelledImage:
    origin: str  # file path or ``data.zip/member``
    name: str  # path relative to the data root given by the user (what the cache records)
    concept: str  # class name (Tiny-ImageNet wnids mapped through words.txt; class folders: folder_dataset.py)
    split: str  # "train" or "val" (held out)
    number: int  # trailing number of the file name (n02504458_17.JPEG -> 17), -1 when there is none


@dataclass(frozen=True)
class FeatureTable:
    """Features of a labelled image set, one row per image.

    ``labels`` index ``concepts``; ``is_train`` says which split each row
    belongs to. The scenarios (scenarios.py) split this into streams and test
    sets, so evaluation code never has to look at ``labels`` of the other split.
    """

    features: np.ndarray  # (n, F) float32
    labels: np.ndarray  # (n,) int64 into concepts
    is_train: np.ndarray  # (n,) bool
    numbers: np.ndarray  # (n,) int64, LabelledImage.number
    concepts: tuple[str, ...]

    def select(self, rows: np.ndarray) -> FeatureTable:
        return FeatureTable(self.features[rows], self.labels[rows], self.is_train[rows], self.numbers[rows],
                            self.concepts)


def list_dataset(data: Path) -> list[LabelledImage]:
    """Images of a ``train/<class>/`` + ``val/<class>/`` layout in a zip or folder (any depth above them)."""
    data = Path(data)
    reader = FileReader()
    try:
        if data.is_dir():
            items = folder_items(data)
        elif split_zip_path(data) is not None:
            zip_path, inner = split_zip_path(data)  # type: ignore[misc]
            items = zip_items(zip_path, inner, reader)
        else:
            raise BadInputError(f"{data}: no such zip or folder (expected train/<class>/ and val/<class>/ inside)")
    finally:
        reader.close()
    root = f"{data}/"
    images = [image for item in items if (image := _labelled(item, root)) is not None]
    splits = {image.split for image in images}
    if splits != set(SPLITS):
        raise BadInputError(f"{data}: found image splits {sorted(splits)}, need both 'train' and 'val' folders "
                            "of class sub-folders (train/<class>/*.jpg, val/<class>/*.jpg)")
    return images


def _labelled(item: ImageItem, root: str) -> LabelledImage | None:
    parts = item.origin.replace("\\", "/").split("/")
    if len(parts) < 3 or parts[-3] not in SPLITS or item.label is None:
        return None
    return LabelledImage(item.origin, item.origin.removeprefix(root), item.label, parts[-3], file_number(parts[-1]))


def file_number(name: str) -> int:
    """Trailing number of a file name (``n02504458_17.JPEG`` -> 17), -1 when there is none."""
    match = _TRAILING_INT.search(Path(name).stem)
    return int(match.group(1)) if match else -1


def backbone_key(bundle: Bundle) -> str:
    """What the features depend on: the graph and the preprocessing (module docstring)."""
    m = bundle.manifest
    ident = {"backbone": m.files.get("backbone.onnx"), "input_size": m.input_size, "resize": m.resize,
             "interpolation": m.interpolation, "mean": list(m.mean), "std": list(m.std), "precision": m.precision,
             "decode_margin": DECODE_MARGIN}  # how small a large JPEG is decoded (Preprocessor.decode_size)
    return new_sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def data_key(data: Path, images: Sequence[LabelledImage]) -> str:
    """Identity of the image set: names plus CRC/size (zip members) or size/mtime (files)."""
    digest = new_sha256()
    located = split_zip_path(Path(data))
    if located is not None and not Path(data).is_dir():
        with zipfile.ZipFile(located[0]) as zf:
            infos = {i.filename: i for i in zf.infolist()}
        prefix = f"{located[0]}/"
        for image in images:
            info = infos[image.origin[len(prefix):]]
            digest.update(f"{info.filename}\0{info.file_size}\0{info.CRC}\n".encode())
    else:
        for image in images:
            stat = Path(image.origin).stat()
            digest.update(f"{image.origin}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def cache_folder(cache_root: Path, bundle: Bundle, data: Path, images: Sequence[LabelledImage]) -> Path:
    return Path(cache_root) / "features" / backbone_key(bundle) / data_key(data, images)


def load_features(
    bundle: Bundle, profile: DeviceProfile, data: Path, cache_root: Path, images: Sequence[LabelledImage] | None = None,
    progress: ProgressFactory = silent,
) -> FeatureTable:
    """Features of every image of ``data`` (or of ``images``, a part of it), extracting what the cache lacks.

    ``progress`` gets a bar over the images extracted (none when everything is cached)."""
    images = list_dataset(data) if images is None else list(images)
    if not images:
        raise BadInputError(f"{data}: no labelled images to extract")
    folder = cache_folder(cache_root, bundle, data, images)
    chunks = [images[i : i + CHUNK] for i in range(0, len(images), CHUNK)]
    missing = [i for i in range(len(chunks)) if not _chunk_path(folder, i).is_file()]
    if missing:
        _extract_chunks(bundle, profile, folder, chunks, missing, progress)
    parts = [_read_chunk(_chunk_path(folder, i), chunk) for i, chunk in enumerate(chunks)]
    features = np.concatenate([p[0] for p in parts])
    ok = np.concatenate([p[1] for p in parts])
    if not ok.all():
        bad = [images[i].origin for i in np.flatnonzero(~ok)]
        log.warning("%d images could not be decoded and are left out: %s", len(bad), ", ".join(bad[:5]))
    concepts = tuple(dict.fromkeys(image.concept for image in images))
    index = {c: i for i, c in enumerate(concepts)}
    keep = np.flatnonzero(ok)
    return FeatureTable(
        features=features[keep],
        labels=np.array([index[images[i].concept] for i in keep], dtype=np.int64),
        is_train=np.array([images[i].split == "train" for i in keep], dtype=bool),
        numbers=np.array([images[i].number for i in keep], dtype=np.int64),
        concepts=concepts,
    )


def _chunk_path(folder: Path, index: int) -> Path:
    return folder / f"chunk-{index:05d}.npz"


def _read_chunk(path: Path, chunk: Sequence[LabelledImage]) -> tuple[np.ndarray, np.ndarray]:
    arrays, meta = load_container(path, CACHE_FORMAT, (CACHE_VERSION,), _FIX)
    features, ok = arrays.get("features"), arrays.get("ok")
    if meta.get("images") != [image.name for image in chunk] or features is None or ok is None:
        raise IntegrityError(f"{path}: cached features belong to other images; {_FIX}")
    if features.shape[0] != len(chunk) or ok.shape != (len(chunk),) or not np.isfinite(features[ok]).all():
        raise IntegrityError(f"{path}: cached features have the wrong shape or hold NaN/Inf; {_FIX}")
    return features.astype(np.float32, copy=False), ok.astype(bool)


def _extract_chunks(
    bundle: Bundle, profile: DeviceProfile, folder: Path, chunks: list[list[LabelledImage]], missing: list[int],
    progress: ProgressFactory,
) -> None:
    from edgecvm.device.runtime import FeatureExtractor

    # Host-side extraction: speed over RSS (module docstring).
    extractor = FeatureExtractor(bundle, dataclasses.replace(profile, ort_cpu_arena=True))
    folder.mkdir(parents=True, exist_ok=True)
    total = sum(len(chunks[i]) for i in missing)
    with progress(total, "extract features", "img") as bar:
        for index in missing:
            chunk = chunks[index]
            features = np.full((len(chunk), extractor.feature_dim), np.nan, dtype=np.float32)
            ok = np.zeros(len(chunk), dtype=bool)
            for start, rows, batch in _preprocessed_batches(chunk, extractor.preprocess):
                if rows.size:
                    features[rows] = extractor.run(batch)
                    ok[rows] = True
                bar.update(min(BATCH, len(chunk) - start))
            meta = {"images": [image.name for image in chunk], "bundle": bundle.sha256}
            save_container(_chunk_path(folder, index), CACHE_FORMAT, CACHE_VERSION, {"features": features, "ok": ok},
                           meta)


def _preprocessed_batches(
    chunk: Sequence[LabelledImage], preprocess: Preprocessor
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(first row, decodable row indices, (k, 3, S, S) batch) per ``BATCH`` images, from a decoding thread,
    each image decoded as the device decodes it (a large JPEG no larger than it needs).

    Decoding and resizing release the GIL, so they overlap the backbone run.
    An unexpected error in the thread is re-raised here, not lost.
    """
    batches: queue.Queue = queue.Queue(maxsize=4)
    failure: list[BaseException] = []

    def produce() -> None:
        reader = FileReader()
        try:
            for start in range(0, len(chunk), BATCH):
                rows, arrays = [], []
                for row, image in enumerate(chunk[start : start + BATCH], start):
                    try:
                        decoded, error = decode_image(reader.read(image.origin), preprocess.decode_size)
                    except (OSError, KeyError, zipfile.BadZipFile) as exc:
                        decoded, error = None, f"cannot read ({exc})"
                    if decoded is None:
                        log.warning("%s: %s; left out", image.origin, error)
                        continue
                    rows.append(row)
                    arrays.append(preprocess(decoded))
                batch = np.stack(arrays) if arrays else np.zeros((0,), dtype=np.float32)
                batches.put((start, np.array(rows, dtype=np.int64), batch))
        except BaseException as exc:  # handed to the consuming thread below
            failure.append(exc)
        finally:
            reader.close()
            batches.put(None)

    thread = threading.Thread(target=produce, name="decode", daemon=True)
    thread.start()
    while (item := batches.get()) is not None:
        yield item
    thread.join()
    if failure:
        raise failure[0]
