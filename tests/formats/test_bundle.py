"""Manifest schema and bundle verification, on a hand-made bundle folder."""

from __future__ import annotations

import json

import pytest
from synthetic_data import anchor_set, head_params

from edgecvm.errors import BadInputError, IntegrityError
from edgecvm.formats.anchors import save_anchors
from edgecvm.formats.bundle import Manifest, load_bundle, load_head_and_anchors, write_manifest
from edgecvm.formats.head_file import save_head
from edgecvm.formats.integrity import sha256_file


@pytest.fixture()
def fake_bundle(tmp_path):
    (tmp_path / "backbone.onnx").write_bytes(b"onnx bytes")
    (tmp_path / "head.npz").write_bytes(b"head bytes")
    (tmp_path / "a.anchors.npz").write_bytes(b"anchor bytes")
    files = {n: sha256_file(tmp_path / n) for n in ("backbone.onnx", "head.npz", "a.anchors.npz")}
    manifest = Manifest(
        format="edgecvm.bundle", version=1, backbone="efficientnet-lite0", input_size=224, resize=256,
        interpolation="bilinear", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), feature_dim=1280, concept_dim=384,
        precision="fp32", head_init="random", anchors_file="a.anchors.npz", anchors_sha256=files["a.anchors.npz"],
        anchors_model="m", files=files,
    )
    write_manifest(tmp_path, manifest)
    return tmp_path


def test_valid_bundle_loads_with_its_manifest(fake_bundle):
    bundle = load_bundle(fake_bundle)
    assert bundle.manifest.mean == (0.5, 0.5, 0.5)
    assert bundle.anchors_path.name == "a.anchors.npz"
    assert len(bundle.sha256) == 64


def test_replaced_file_is_named(fake_bundle):
    (fake_bundle / "head.npz").write_bytes(b"other head")
    with pytest.raises(IntegrityError, match=r"head\.npz: sha256 does not match"):
        load_bundle(fake_bundle)


def test_missing_file_is_named(fake_bundle):
    (fake_bundle / "backbone.onnx").unlink()
    with pytest.raises(IntegrityError, match=r"backbone\.onnx: missing from bundle"):
        load_bundle(fake_bundle)


def test_edited_manifest_is_detected(fake_bundle):
    path = fake_bundle / "manifest.json"
    data = json.loads(path.read_text())
    data["mean"] = [0.485, 0.456, 0.406]
    path.write_text(json.dumps(data))
    with pytest.raises(IntegrityError, match="manifest checksum mismatch"):
        load_bundle(fake_bundle)


def test_truncated_manifest_is_detected(fake_bundle):
    path = fake_bundle / "manifest.json"
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(IntegrityError, match="manifest.json: unreadable or corrupt"):
        load_bundle(fake_bundle)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BadInputError, match="not a bundle"):
        load_bundle(tmp_path)
    with pytest.raises(BadInputError, match="bundle folder not found"):
        load_bundle(tmp_path / "nope")


def test_head_and_anchors_of_different_concept_spaces_name_both_files(tmp_path):
    """Each file intact and sealed in the manifest, but a 16-d anchor file beside a head that maps to 8-d."""
    save_head(tmp_path / "head.npz", head_params("linear", 32, 8))
    save_anchors(tmp_path / "a.anchors.npz", anchor_set(16))
    (tmp_path / "backbone.onnx").write_bytes(b"onnx bytes")
    files = {n: sha256_file(tmp_path / n) for n in ("backbone.onnx", "head.npz", "a.anchors.npz")}
    write_manifest(tmp_path, Manifest(
        format="edgecvm.bundle", version=1, backbone="efficientnet-lite0", input_size=224, resize=256,
        interpolation="bilinear", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), feature_dim=32, concept_dim=8,
        precision="fp32", head_init="random", anchors_file="a.anchors.npz", anchors_sha256=files["a.anchors.npz"],
        anchors_model="m", files=files,
    ))
    with pytest.raises(IntegrityError) as info:
        load_head_and_anchors(load_bundle(tmp_path))
    message = str(info.value)
    assert str(tmp_path / "a.anchors.npz") in message and str(tmp_path / "head.npz") in message
    assert "16-d anchors" in message and "to 8-d" in message and "\n" not in message
