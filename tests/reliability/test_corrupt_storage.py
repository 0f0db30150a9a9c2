"""Corrupt storage: every persisted file type, truncated / zeroed / bit-flipped at several offsets.

Each case must be detected at load with a one-line error naming the file, or
(for manifest bytes that carry no meaning, such as the trailing newline) load
to exactly the original content: never silently different output.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from faults import CORRUPTION_IDS, CORRUPTIONS, corrupt_file, seal_bundle

from edgecvm.errors import EdgeCVMError, IntegrityError
from edgecvm.formats.anchors import AnchorSet, load_anchors, normalise_rows, save_anchors
from edgecvm.formats.bundle import MANIFEST, load_bundle, read_manifest
from edgecvm.formats.head_file import ConseBranch, HeadParams, load_head, save_head

RNG = np.random.default_rng(0)


def _anchors() -> AnchorSet:
    return AnchorSet(("cat", "dog", "mug", "sock"), normalise_rows(RNG.normal(size=(4, 16))), "test-model", ("{}",), "int8")


def _head() -> HeadParams:
    conse = ConseBranch(fc_w=RNG.normal(size=(32, 5)).astype(np.float32), fc_b=np.zeros(5, np.float32),
                        anchors=normalise_rows(RNG.normal(size=(5, 16))), top_t=3)
    params = {"w": RNG.normal(size=(32, 16)).astype(np.float32), "b": RNG.normal(size=16).astype(np.float32)}
    return HeadParams(kind="linear", feature_dim=32, concept_dim=16, params=params, conse=conse)


def _assert_one_line_naming(exc: EdgeCVMError, name: str) -> None:
    message = str(exc)
    assert "\n" not in message
    assert name in message


@pytest.mark.parametrize(("kind", "frac"), CORRUPTIONS, ids=CORRUPTION_IDS)
def test_corrupt_anchor_file_is_detected(tmp_path, kind, frac):
    path = tmp_path / "t.anchors.npz"
    save_anchors(path, _anchors(), dtype="int8")
    corrupt_file(path, kind, frac)
    with pytest.raises(IntegrityError) as info:
        load_anchors(path)
    _assert_one_line_naming(info.value, "t.anchors.npz")


@pytest.mark.parametrize(("kind", "frac"), CORRUPTIONS, ids=CORRUPTION_IDS)
def test_corrupt_head_file_is_detected(tmp_path, kind, frac):
    path = tmp_path / "head.npz"
    save_head(path, _head())
    corrupt_file(path, kind, frac)
    with pytest.raises(IntegrityError) as info:
        load_head(path)
    _assert_one_line_naming(info.value, "head.npz")


@pytest.fixture()
def small_bundle(tmp_path):
    """A bundle folder with real head and anchor files (the ONNX bytes are not parsed by load_bundle)."""
    folder = tmp_path / "bundle"
    folder.mkdir()
    (folder / "backbone.onnx").write_bytes(RNG.bytes(4096))
    save_head(folder / "head.npz", _head())
    save_anchors(folder / "t.anchors.npz", _anchors())
    seal_bundle(folder, "t.anchors.npz", feature_dim=32, concept_dim=16)
    return folder


@pytest.mark.parametrize("name", ["backbone.onnx", "head.npz", "t.anchors.npz"])
@pytest.mark.parametrize(("kind", "frac"), CORRUPTIONS, ids=CORRUPTION_IDS)
def test_corrupt_bundle_file_is_detected_by_load_bundle(small_bundle, name, kind, frac):
    corrupt_file(small_bundle / name, kind, frac)
    with pytest.raises(IntegrityError) as info:
        load_bundle(small_bundle)
    _assert_one_line_naming(info.value, name)


@pytest.mark.parametrize(("kind", "frac"), CORRUPTIONS, ids=CORRUPTION_IDS)
def test_corrupt_manifest_is_detected_or_harmless(small_bundle, kind, frac):
    path = small_bundle / MANIFEST
    original = read_manifest(small_bundle)
    original_json = json.loads(path.read_text())
    corrupt_file(path, kind, frac)
    try:
        loaded = load_bundle(small_bundle).manifest
    except EdgeCVMError as exc:
        _assert_one_line_naming(exc, MANIFEST)
        return
    # Only bytes without meaning (trailing newline, whitespace) may change without an error.
    assert loaded == original
    assert json.loads(path.read_text()) == original_json
