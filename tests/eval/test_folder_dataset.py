"""A folder of class folders as an evaluation set: concept names, the per-class split, names files, bad layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgecvm.errors import BadInputError
from edgecvm.eval.feature_cache import FeatureTable
from edgecvm.eval.folder_dataset import (
    check_class_sizes,
    class_counts,
    concept_name,
    list_class_folders,
    list_images,
)
from edgecvm.eval.names_file import read_names_file


def make_folder(root: Path, classes: dict[str, int], order: str = "forward") -> Path:
    """Class folders of empty ``.jpg`` files (listing never decodes), written in the given order."""
    for folder, count in classes.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        numbers = range(count) if order == "forward" else reversed(range(count))
        for i in numbers:
            (root / folder / f"img_{i}.jpg").write_bytes(b"")
    return root


@pytest.mark.parametrize(("folder", "name"), [("water_lilly", "water lilly"), ("Egyptian  cat", "Egyptian cat"),
                                              ("__odd__name_", "odd name"), ("t-shirt", "t-shirt"),
                                              ("café_au_lait", "café au lait")])
def test_concept_names_come_from_folder_names(folder: str, name: str):
    assert concept_name(folder) == name


def test_the_split_is_per_class_deterministic_and_ignores_the_order_files_were_written(tmp_path: Path):
    a = list_class_folders(make_folder(tmp_path / "a", {"cat": 20, "dog_toy": 7}), test_fraction=0.25)
    b = list_class_folders(make_folder(tmp_path / "b", {"cat": 20, "dog_toy": 7}, order="backward"), 0.25)
    assert [(i.name, i.split) for i in a] == [(i.name, i.split) for i in b]
    held_out = {c: sum(i.split == "val" for i in a if i.concept == c) for c in ("cat", "dog toy")}
    assert held_out == {"cat": 5, "dog toy": 2}  # round(20 / 4), round(7 / 4)
    assert [i.name for i in a] == sorted(i.name for i in a)  # path order, whatever the split
    # another photo of a class moves at most one of the others across
    make_folder(tmp_path / "a", {"cat": 21})
    again = {i.name: i.split for i in list_class_folders(tmp_path / "a", 0.25)}
    assert sum(again[i.name] != i.split for i in a) <= 1


def test_a_names_file_renames_folders(tmp_path: Path):
    data = make_folder(tmp_path / "photos", {"cup_of_coffee": 3, "kitty": 3})
    names = tmp_path / "names.tsv"
    names.write_text("# folder\tconcept\ncup_of_coffee\t espresso  cup\n")
    assert {i.concept for i in list_class_folders(data, names_file=names)} == {"espresso cup", "kitty"}


@pytest.mark.parametrize(("text", "message"), [
    ("cat\n", "expected one `folder<TAB>concept name`"),
    ("cat\tkitten\tmore\n", "expected one"),
    ("cat\tkitten\ncat\tfeline\n", "renamed twice"),
    ("# nothing\n", "renames no folder"),
    ("cta\tkitten\n", "'cta', which is not a class folder"),
])
def test_bad_names_files_are_refused_naming_the_line(tmp_path: Path, text: str, message: str):
    data = make_folder(tmp_path / "photos", {"cat": 3})
    names = tmp_path / "names.tsv"
    names.write_text(text)
    with pytest.raises(BadInputError, match=message):
        list_class_folders(data, names_file=names)
    if "which is not" in message:
        with pytest.raises(BadInputError, match="did you mean 'cat'"):
            list_class_folders(data, names_file=names)


def test_a_missing_names_file_is_named(tmp_path: Path):
    with pytest.raises(BadInputError, match="names.tsv: names file not found"):
        read_names_file(tmp_path / "names.tsv")


@pytest.mark.parametrize(("layout", "message"), [
    ({}, "no class folders inside"),
    ({"water_lilly": 3, "water lilly": 3}, "'water lilly' and 'water_lilly' both name the concept 'water lilly'"),
    ({"___": 3}, "folder name gives no concept name"),
    ({"cat": 3, "dog": 1}, "class 'dog' has 1 usable image"),
    ({"cat": 3, "dog": 0}, "class 'dog' has 0 usable image"),
])
def test_bad_layouts_are_refused_naming_the_folder_or_class(tmp_path: Path, layout: dict[str, int], message: str):
    data = make_folder(tmp_path / "photos", layout)
    data.mkdir(exist_ok=True)
    (data / ".DS_Store").write_bytes(b"\0")  # hidden files are not classes
    with pytest.raises(BadInputError, match=message):
        list_class_folders(data)


def test_a_file_where_a_folder_is_expected(tmp_path: Path):
    data = make_folder(tmp_path / "photos", {"cat": 3})
    (data / "stray.jpg").write_bytes(b"")
    with pytest.raises(BadInputError, match="1 image file.*where class folders are expected.*'stray.jpg'"):
        list_class_folders(data)
    with pytest.raises(BadInputError, match="expected a folder of class folders.*found a file"):
        list_images(data / "stray.jpg")
    with pytest.raises(BadInputError, match="nothing-here.zip: no such folder or zip"):
        list_images(tmp_path / "nothing-here.zip")


def test_split_layout_options_are_refused_on_a_train_val_folder(tmp_path: Path):
    data = make_folder(tmp_path / "tiny", {"train/cat": 2, "val/cat": 1})
    assert {(i.concept, i.split) for i in list_images(data)} == {("cat", "train"), ("cat", "val")}
    with pytest.raises(BadInputError, match="--test-fraction applies to a folder of class folders"):
        list_images(data, test_fraction=0.3)
    with pytest.raises(BadInputError, match="between 0 and 1"):
        list_class_folders(make_folder(tmp_path / "p", {"cat": 3}), test_fraction=1.0)


def test_class_sizes_are_checked_on_what_decoded():
    table = FeatureTable(np.zeros((3, 2), np.float32), np.array([0, 0, 1]), np.array([True, False, True]),
                         np.full(3, -1), ("cat", "dog"))
    assert class_counts(table) == {"cat": (1, 1), "dog": (1, 0)}
    with pytest.raises(BadInputError, match="photos: class 'dog' has 1 usable image.*1 to learn from, 0 to test on"):
        check_class_sizes(class_counts(table), "photos")
