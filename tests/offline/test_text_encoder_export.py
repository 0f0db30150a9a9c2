"""`export --text-encoder`: the anchors' language model as a hashed bundle part that matches sentence-transformers."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgecvm.device.text_encoder import TextEncoder
from edgecvm.errors import BadInputError, IntegrityError
from edgecvm.formats.anchors import AnchorSet, normalise_rows
from edgecvm.formats.bundle import (
    TEXT_ENCODER,
    TEXT_ENCODER_CONFIG,
    TEXT_ENCODER_FILES,
    load_bundle,
    write_manifest,
)
from edgecvm.formats.text_encoder_config import read_text_encoder_config
from edgecvm.offline.text_encoder_export import MIN_COSINE_MEAN, MIN_COSINE_MIN, export_text_encoder


@pytest.fixture(scope="module")
def sentence_encoder():
    from edgecvm.offline.text_encoder import TextEncoder as SentenceEncoder

    return SentenceEncoder()


def test_the_part_is_hashed_int8_and_says_how_to_pool(encoder_bundle: Path, test_bundle: Path) -> None:
    bundle = load_bundle(encoder_bundle)
    assert bundle.has_text_encoder and set(TEXT_ENCODER_FILES) <= set(bundle.manifest.files)
    config = read_text_encoder_config(encoder_bundle / TEXT_ENCODER_CONFIG)
    assert (config.precision, config.pooling, config.normalize, config.dim, config.max_seq_length) == \
        ("int8", "mean", True, 384, 256)
    assert config.onnx_bytes == (encoder_bundle / TEXT_ENCODER).stat().st_size < config.fp32_bytes / 3
    assert config.parity["cosine_mean"] >= MIN_COSINE_MEAN and config.parity["cosine_min"] >= MIN_COSINE_MIN
    assert not load_bundle(test_bundle).has_text_encoder  # optional: a bundle exported without it has none
    assert not any((test_bundle / name).exists() for name in TEXT_ENCODER_FILES)


def test_device_sentences_match_sentence_transformers(encoder_bundle: Path, sentence_encoder) -> None:
    texts = ["a photo of a garden gnome.", "x", "Cardigan (Cardigan Welsh corgi): a short-legged dog",
             "a blurry photo of a C{++} textbook.", "école maternelle", " ".join(["very long text"] * 120)]
    with TextEncoder(encoder_bundle) as device:
        got = device.encode(texts)  # one padded batch: the short texts must not see the padding
        alone = np.concatenate([device.encode([t]) for t in texts])
    want = sentence_encoder.encode(texts)
    np.testing.assert_allclose(got, alone, atol=1e-4)
    assert np.min(np.sum(got * want, axis=1)) > 0.98


def test_a_tampered_or_incomplete_part_is_refused(tmp_path: Path, encoder_bundle: Path) -> None:
    copy = Path(shutil.copytree(encoder_bundle, tmp_path / "bundle"))
    onnx = copy / TEXT_ENCODER
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0x01
    onnx.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="text_encoder.onnx: sha256 does not match"):
        load_bundle(copy)
    manifest = load_bundle(encoder_bundle).manifest
    files = {k: v for k, v in manifest.files.items() if k != TEXT_ENCODER_CONFIG}
    write_manifest(copy, dataclasses.replace(manifest, files=files))
    with pytest.raises(IntegrityError, match="needs all of"):
        load_bundle(copy, verify=False)


def test_anchors_of_another_model_are_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vectors = normalise_rows(rng.standard_normal((3, 384)))
    other = AnchorSet(("a", "b", "c"), vectors, "sentence-transformers/all-MiniLM-L6-v2", ("{}",), "float16",
                      vectors[0])  # the right id, but another model's probe
    with pytest.raises(BadInputError, match="must be the model that made the anchors"):
        export_text_encoder(tmp_path, other, "int8")
    assert list(tmp_path.iterdir()) == []
