"""A folder of class folders (``photos/<concept>/*.jpg``) as a labelled image set with its own train/test split.

A user's photos come as one folder per concept, not as Tiny-ImageNet's
``train/`` and ``val/``. Each class's images are ordered by a hash of their
file name and the first ``test_fraction`` of them are held out: the split is
the same on every run and machine, does not follow the order files were
copied in, and adding a photo moves at most one other across. The image list
itself stays in path order whatever the split, so the feature cache
(feature_cache.py) is reused when only the fraction or the names change.

Concept names come from folder names: underscores become spaces and runs of
spaces collapse (``water_lilly`` -> ``water lilly``); a names file
(names_file.py) renames folders whose names say it badly. Images may sit at any
depth below their class folder; hidden files and folders are ignored.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from edgecvm.device.image_files import IMAGE_SUFFIXES, folder_items, split_zip_path
from edgecvm.errors import BadInputError
from edgecvm.eval.feature_cache import FeatureTable, LabelledImage, file_number, list_dataset
from edgecvm.eval.names_file import read_names_file

DEFAULT_TEST_FRACTION = 0.2
MIN_IMAGES = 2  # per class: one to learn from, one to test on
LAYOUT = "DIR/<concept>/*.jpg"


def list_images(data: Path, test_fraction: float | None = None, names_file: Path | None = None) -> list[LabelledImage]:
    """The images of ``data`` in either layout: a zip or folder with train/ + val/ (Tiny-ImageNet's), or class folders."""
    data = Path(data)
    if data.is_dir():
        split_layout = (data / "train").is_dir() and (data / "val").is_dir()
    elif split_zip_path(data) is not None:
        split_layout = True
    elif not data.exists():
        raise BadInputError(f"{data}: no such folder or zip; expected a folder of class folders ({LAYOUT}) or a zip "
                            "or folder with train/<class>/ and val/<class>/")
    else:
        split_layout = False  # a plain file: list_class_folders names it
    if not split_layout:
        return list_class_folders(data, DEFAULT_TEST_FRACTION if test_fraction is None else test_fraction, names_file)
    for option, value in (("--test-fraction", test_fraction), ("--names", names_file)):
        if value is not None:
            raise BadInputError(f"{option} applies to a folder of class folders ({LAYOUT}); {data} has its own "
                                "train/ and val/ split and concept names")
    return list_dataset(data)


def concept_name(folder: str) -> str:
    """``water_lilly`` -> ``water lilly``: underscores to spaces, runs of spaces collapsed."""
    return " ".join(folder.replace("_", " ").split())


def list_class_folders(data: Path, test_fraction: float = DEFAULT_TEST_FRACTION,
                       names_file: Path | None = None) -> list[LabelledImage]:
    """Every image below ``data``'s class folders, in path order, each marked "train" or "val" (held out)."""
    data = Path(data)
    if not 0 < test_fraction < 1:
        raise BadInputError(f"--test-fraction must be between 0 and 1 (exclusive), got {test_fraction}")
    if not data.is_dir():
        found = "found a file" if data.exists() else "no such folder"
        raise BadInputError(f"{data}: expected a folder of class folders ({LAYOUT}); {found}")
    entries = sorted(p for p in data.iterdir() if not p.name.startswith(".") and p.name != "__MACOSX")
    stray = [p.name for p in entries if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if stray:
        raise BadInputError(f"{data}: {len(stray)} image file(s) where class folders are expected (e.g. {stray[0]!r}); "
                            f"put each image in the folder of its concept ({LAYOUT})")
    folders = [p for p in entries if p.is_dir()]
    if not folders:
        raise BadInputError(f"{data}: no class folders inside; expected {LAYOUT}")
    concepts = _concepts(data, [f.name for f in folders], names_file)
    images: list[LabelledImage] = []
    counts: dict[str, tuple[int, int]] = {}
    for folder in folders:
        relative = [Path(item.origin).relative_to(folder).as_posix() for item in folder_items(folder)]
        held_out = _held_out(relative, test_fraction)
        concept = concepts[folder.name]
        for name in relative:
            split = "val" if name in held_out else "train"
            images.append(LabelledImage(str(folder / name), f"{folder.name}/{name}", concept, split, file_number(name)))
        counts[concept] = (len(relative) - len(held_out), len(held_out))
    check_class_sizes(counts, str(data))
    return images


def _concepts(data: Path, folders: list[str], names_file: Path | None) -> dict[str, str]:
    """Folder -> concept name; two folders that would answer to one name are an error naming both."""
    renames = read_names_file(names_file) if names_file is not None else {}
    for folder in renames:
        if folder not in folders:
            close = difflib.get_close_matches(folder, folders, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise BadInputError(f"{names_file}: renames folder {folder!r}, which is not a class folder of {data}{hint}")
    concepts: dict[str, str] = {}
    owner: dict[str, str] = {}
    for folder in folders:
        concept = renames.get(folder) or concept_name(folder)
        if not concept:
            raise BadInputError(f"{data / folder}: folder name gives no concept name; rename the folder or give it "
                                "a name in a names file (--names)")
        key = concept.casefold()
        if key in owner:
            raise BadInputError(f"{data}: folders {owner[key]!r} and {folder!r} both name the concept {concept!r}; "
                                "merge them or rename one (--names)")
        owner[key] = folder
        concepts[folder] = concept
    return concepts


def _held_out(names: list[str], test_fraction: float) -> set[str]:
    """The first ``test_fraction`` of a class's files in hash order (at least one, and never all of them)."""
    n_test = max(0, min(len(names) - 1, max(1, round(len(names) * test_fraction))))
    ranked = sorted(names, key=lambda name: hashlib.sha256(name.encode()).hexdigest())
    return set(ranked[:n_test])


def class_counts(table: FeatureTable) -> dict[str, tuple[int, int]]:
    """Concept -> (images to learn from, images to test on) of a feature table (what decoded)."""
    train = np.bincount(table.labels[table.is_train], minlength=len(table.concepts))
    test = np.bincount(table.labels[~table.is_train], minlength=len(table.concepts))
    return {c: (int(train[i]), int(test[i])) for i, c in enumerate(table.concepts)}


def check_class_sizes(counts: Mapping[str, tuple[int, int]], source: str) -> None:
    """An error naming the first class without an image to learn from and one to test on."""
    for concept, (train, test) in counts.items():
        if train < 1 or test < 1:
            raise BadInputError(
                f"{source}: class {concept!r} has {train + test} usable image(s) ({train} to learn from, {test} to "
                f"test on); each class needs at least {MIN_IMAGES}, one of each: add photos or remove the class")
