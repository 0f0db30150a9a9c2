"""Zero-shot over a whole anchor file: an image counts when its own concept (by WordNet id or name) is in the top k."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgecvm.errors import BadInputError
from edgecvm.eval import scenarios
from edgecvm.eval.vocabulary import anchor_rows, read_wordnet_ids, table, zero_shot_over
from edgecvm.formats.anchors import AnchorSet, load_anchors, normalise_rows, save_anchors
from edgecvm.formats.head_file import ConseBranch, HeadParams

NAMES = ("apple", "bear", "crane (bird)", "dog", "eel", "fig")
IDS = ("n01", "n02", "n03", "n04", "n05", "n06")
CONCEPTS = ("apple", "bear", "crane", "teddy bear")  # the dataset's names; crane is n03, teddy bear is in no row
CONCEPT_IDS = {"apple": "n01", "bear": "n02", "crane": "n03", "teddy bear": "n99"}


def device(dim: int = 16) -> tuple[HeadParams, AnchorSet]:
    """A ConSE head whose answer for one-hot feature i is exactly anchor i (i < 4)."""
    vectors = normalise_rows(np.random.default_rng(0).normal(size=(len(NAMES), dim)))
    branch = ConseBranch(fc_w=10 * np.eye(4, dtype=np.float32), fc_b=np.zeros(4, np.float32), anchors=vectors[:4],
                         top_t=1)
    head = HeadParams(kind="linear", feature_dim=4, concept_dim=dim,
                      params={"w": np.zeros((4, dim), np.float32), "b": np.zeros(dim, np.float32)}, conse=branch)
    return head, AnchorSet(NAMES, vectors, "test-model", ("{}",), "float16")


def test_by_wordnet_id_a_qualified_name_still_counts_and_a_missing_concept_never_does(tmp_path: Path):
    head, anchors = device()
    test = scenarios.TestSet(np.eye(4, dtype=np.float32), np.arange(4))  # image i shows dataset concept i
    by_id = zero_shot_over(head, anchors, "six", test, CONCEPTS, anchor_rows(CONCEPTS, anchors, CONCEPT_IDS, IDS),
                           "WordNet id")
    assert (by_id.accuracy, by_id.covered, by_id.missing) == ({1: 0.75, 5: 0.75}, 3, ("teddy bear",))
    by_name = zero_shot_over(head, anchors, "six", test, CONCEPTS, anchor_rows(CONCEPTS, anchors), "name")
    assert by_name.accuracy[1] == 0.5 and by_name.missing == ("crane", "teddy bear")
    save_anchors(tmp_path / "i8.npz", anchors, "int8")  # held as int8: the same answers
    held = zero_shot_over(head, load_anchors(tmp_path / "i8.npz"), "six", test, CONCEPTS,
                          anchor_rows(CONCEPTS, anchors, CONCEPT_IDS, IDS), "WordNet id")
    assert held.accuracy == by_id.accuracy
    assert "| six | 6 | 75.0 | 75.0 | 4 (3) | WordNet id |" in table([by_id])


def test_no_concept_in_the_file_is_an_error():
    head, anchors = device()
    test = scenarios.TestSet(np.eye(4, dtype=np.float32), np.arange(4))
    with pytest.raises(BadInputError, match="none of the 4 dataset concepts"):
        zero_shot_over(head, anchors, "six", test, CONCEPTS, np.full(4, -1), "name")
    with pytest.raises(BadInputError, match="5 WordNet ids for 6 anchors"):
        anchor_rows(CONCEPTS, anchors, CONCEPT_IDS, IDS[:5])


def test_wordnet_id_lists(tmp_path: Path):
    path = tmp_path / "ids.tsv"
    path.write_text("index\twnid\tlemmas\n0\tn01\tapple\n1\tn02\tbear, bruin\n")
    assert read_wordnet_ids(path) == ("n01", "n02")
    for text, message in (("name\tlemmas\nn01\tapple\n", "column headed 'wnid'"), ("wnid\nn01\nn01\n", "twice"),
                          ("index\twnid\n0\n", "no wnid field")):
        path.write_text(text)
        with pytest.raises(BadInputError, match=message):
            read_wordnet_ids(path)
    with pytest.raises(BadInputError, match="cannot read"):
        read_wordnet_ids(tmp_path / "missing.tsv")
