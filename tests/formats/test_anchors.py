"""Anchor files and AnchorSet: round trips, quantisation, tamper detection, lookups (numpy only, no model)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgecvm import resources
from edgecvm.errors import BadInputError, IntegrityError
from edgecvm.formats.anchors import (
    ANCHORS_FORMAT,
    ANCHORS_VERSION,
    AnchorSet,
    encode_names,
    load_anchors,
    nearest_pairs,
    normalise_rows,
    save_anchors,
)
from edgecvm.formats.integrity import save_container
from edgecvm.offline.concepts import read_concepts

ANCHORS_DIR = resources.anchors_file("")
MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def random_anchors(n: int = 12, dim: int = 16, seed: int = 0, names: tuple[str, ...] | None = None) -> AnchorSet:
    rng = np.random.default_rng(seed)
    names = names or tuple(f"concept {i}" for i in range(n))
    probe = normalise_rows(rng.normal(size=(1, dim)))[0]
    return AnchorSet(names, normalise_rows(rng.normal(size=(len(names), dim))), MODEL, ("a photo of a {}.",),
                     "float16", probe)


def test_float16_round_trip_keeps_everything(tmp_path: Path) -> None:
    names = ("Egyptian cat", "café crème", "東京タワー", "school bus")
    anchors = random_anchors(names=names)
    digest = save_anchors(tmp_path / "a.anchors.npz", anchors)
    loaded = load_anchors(tmp_path / "a.anchors.npz")
    assert len(digest) == 64
    assert loaded.names == names and loaded.model == MODEL and loaded.templates == ("a photo of a {}.",)
    assert loaded.dtype == "float16" and loaded.dim == 16 and len(loaded) == 4
    assert loaded.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(loaded.vectors, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(loaded.vectors, anchors.vectors, atol=2e-3)
    np.testing.assert_array_equal(loaded.model_probe, anchors.model_probe)


def test_int8_is_smaller_and_keeps_directions(tmp_path: Path) -> None:
    anchors = random_anchors(n=300, dim=384)
    save_anchors(tmp_path / "f16.npz", anchors, "float16")
    save_anchors(tmp_path / "i8.npz", anchors, "int8")
    loaded = load_anchors(tmp_path / "i8.npz")
    assert loaded.dtype == "int8"
    cosines = np.sum(loaded.vectors * anchors.vectors, axis=1)
    assert cosines.min() > 0.999
    assert (tmp_path / "i8.npz").stat().st_size < 0.6 * (tmp_path / "f16.npz").stat().st_size


def test_int8_files_stay_int8_in_memory_and_score_like_float32(tmp_path: Path, monkeypatch) -> None:
    anchors = random_anchors(n=5000, dim=32, seed=1)
    save_anchors(tmp_path / "i8.npz", anchors, "int8")
    held = load_anchors(tmp_path / "i8.npz")
    dense = AnchorSet(held.names, held.vectors, MODEL, held.templates, "int8")
    assert held.resident_bytes < dense.resident_bytes  # codes + a factor per row (+ one block) vs float32 rows
    np.testing.assert_allclose(np.linalg.norm(held.vectors, axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(held.rows([7, 3]), held.vectors[[7, 3]])
    queries = normalise_rows(np.random.default_rng(2).normal(size=(4, 32)))
    monkeypatch.setattr("edgecvm.formats.anchors.SCORE_BLOCK", 7)  # many blocks and a short last one
    np.testing.assert_allclose(held.similarities(queries), queries @ dense.vectors.T, atol=1e-6)
    np.testing.assert_allclose(held.subset(["concept 9"]).vectors, held.rows([9]))


def test_names_added_to_int8_held_anchors_stay_int8(tmp_path: Path) -> None:
    save_anchors(tmp_path / "i8.npz", random_anchors(n=400, dim=64), "int8")
    held = load_anchors(tmp_path / "i8.npz")
    new = random_anchors(names=("garden gnome", "blue mug"), dim=64, seed=3)
    both = held.extended(new)
    assert both.names == held.names + new.names
    assert both.resident_bytes < AnchorSet(both.names, both.vectors, MODEL, both.templates, "int8").resident_bytes
    np.testing.assert_array_equal(both.rows(np.arange(400)), held.vectors)
    cosines = np.sum(both.rows([400, 401]) * new.vectors, axis=1)
    assert cosines.min() > 0.999
    np.testing.assert_allclose(np.linalg.norm(both.vectors, axis=1), 1.0, atol=1e-6)


def test_int8_scales_must_be_positive_and_finite(tmp_path: Path) -> None:
    save_anchors(tmp_path / "i8.npz", random_anchors(n=3), "int8")
    with np.load(tmp_path / "i8.npz", allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files if name != "__meta__"}
    meta = {"model": MODEL, "dim": 16, "count": 3, "dtype": "int8", "templates": ["{}"]}
    for bad in (np.nan, 0.0):
        arrays["scales"] = np.array([0.01, bad, 0.01], dtype=np.float32)
        save_container(tmp_path / "bad.npz", ANCHORS_FORMAT, ANCHORS_VERSION, arrays, meta)
        with pytest.raises(IntegrityError, match="bad.npz: int8 anchors need one positive finite scale per row"):
            load_anchors(tmp_path / "bad.npz")


def test_file_holds_no_pickles_or_object_arrays(tmp_path: Path) -> None:
    save_anchors(tmp_path / "a.npz", random_anchors(), "int8")
    with np.load(tmp_path / "a.npz", allow_pickle=False) as npz:
        assert {"names", "vectors", "scales", "model_probe"} <= set(npz.files)
        assert all(npz[name].dtype != object for name in npz.files)


def test_shipped_anchor_files_match_their_concept_lists() -> None:
    for stem, count, dtype in (("tiny-imagenet-200", 200, "float16"), ("imagenet-1k", 1000, "float16"),
                               ("imagenet-21k", 21843, "int8")):
        anchors = load_anchors(ANCHORS_DIR / f"{stem}.anchors.npz")
        assert anchors.names == tuple(c.name for c in read_concepts(ANCHORS_DIR / f"{stem}.tsv"))
        assert (len(anchors), anchors.dim, anchors.dtype, anchors.model) == (count, 384, dtype, MODEL)
        assert len(anchors.templates) > 1 and anchors.model_probe is not None
    assert (ANCHORS_DIR / "imagenet-1k.anchors.npz").stat().st_size <= 800_000  # 1,000 x 384 at float16
    assert (ANCHORS_DIR / "imagenet-21k.anchors.npz").stat().st_size <= 9_000_000  # 21,843 x 384 at int8
    assert anchors.resident_bytes < 16 * 2**20  # held as int8: not the 33.5 MB of a float32 matrix


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("where", [0.1, 0.5, 0.99])
def test_any_flipped_bit_is_caught(tmp_path: Path, where: float) -> None:
    path = tmp_path / "a.npz"
    save_anchors(path, random_anchors())
    _flip_byte(path, int(path.stat().st_size * where))
    with pytest.raises(IntegrityError, match=r"a\.npz: checksum mismatch.*edgecvm anchors build"):
        load_anchors(path)


def test_truncated_and_missing_files(tmp_path: Path) -> None:
    path = tmp_path / "a.npz"
    save_anchors(path, random_anchors())
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(IntegrityError, match="checksum mismatch"):
        load_anchors(path)
    with pytest.raises(BadInputError, match="missing.npz: no such file"):
        load_anchors(tmp_path / "missing.npz")


def test_a_well_hashed_file_with_inconsistent_contents_is_refused(tmp_path: Path) -> None:
    """Checksums prove the bytes are as written, not that the writer was right: shapes are validated too."""
    vectors = np.ones((3, 8), dtype=np.float16)
    meta = {"model": MODEL, "dim": 8, "count": 3, "dtype": "float16", "templates": []}
    save_container(tmp_path / "names.npz", ANCHORS_FORMAT, ANCHORS_VERSION,
                   {"vectors": vectors, "names": encode_names(["a", "b"])}, meta)
    save_container(tmp_path / "dim.npz", ANCHORS_FORMAT, ANCHORS_VERSION,
                   {"vectors": vectors, "names": encode_names(["a", "b", "c"])}, {**meta, "dim": 9})
    save_container(tmp_path / "dtype.npz", ANCHORS_FORMAT, ANCHORS_VERSION,
                   {"vectors": vectors.astype(np.float32), "names": encode_names(["a", "b", "c"])}, meta)
    save_container(tmp_path / "dupes.npz", ANCHORS_FORMAT, ANCHORS_VERSION,
                   {"vectors": vectors, "names": encode_names(["a", "b", "A"])}, meta)
    save_container(tmp_path / "head.npz", "edgecvm.head", 1, {"w": vectors}, {})
    for name, message in (("names", "not a list of 3"), ("dim", "not 3x9"), ("dtype", r"not \(3, D\) float16"),
                          ("dupes", "unique"), ("head", "expected a edgecvm.anchors file")):
        with pytest.raises(IntegrityError, match=f"{name}.npz: .*{message}"):
            load_anchors(tmp_path / f"{name}.npz")


def test_index_of_is_case_insensitive_and_suggests_close_names() -> None:
    anchors = random_anchors(names=("Egyptian cat", "Persian cat", "tabby cat", "school bus", "goldfish"))
    assert anchors.index_of("egyptian CAT") == 0 and anchors.index_of("  tabby   cat ") == 2
    with pytest.raises(BadInputError, match=r"unknown concept 'persian kat'.*Close names: 'Persian cat'.*extend"):
        anchors.index_of("persian kat")
    with pytest.raises(BadInputError, match=r"unknown concept 'xylophone': not among the 5 anchors\. Add"):
        anchors.index_of("xylophone")


def test_close_names_are_at_most_five() -> None:
    anchors = random_anchors(names=tuple(f"cat {c}" for c in "abcdefgh"))
    with pytest.raises(BadInputError) as info:
        anchors.index_of("cat")
    assert str(info.value).count("'cat ") == 5


def test_subset_and_indices_follow_the_requested_order() -> None:
    anchors = random_anchors()
    sub = anchors.subset(["concept 7", "CONCEPT 2"])
    assert sub.names == ("concept 7", "concept 2")
    np.testing.assert_array_equal(anchors.indices_of(["concept 7", "concept 2"]), [7, 2])
    np.testing.assert_array_equal(sub.vectors, anchors.vectors[[7, 2]])
    assert (sub.model, sub.templates, sub.dtype) == (anchors.model, anchors.templates, anchors.dtype)
    np.testing.assert_array_equal(sub.model_probe, anchors.model_probe)


def test_constructor_refuses_inconsistent_sets() -> None:
    with pytest.raises(BadInputError, match="do not match 2 concept names"):
        AnchorSet(("a", "b"), np.zeros((3, 4)), MODEL, (), "float16")
    with pytest.raises(BadInputError, match="unique"):
        AnchorSet(("a", "A"), np.zeros((2, 4)), MODEL, (), "float16")
    for bad in ("", "two  spaces", " padded", 3):
        with pytest.raises(BadInputError, match="single spaces"):
            AnchorSet(("a", bad), np.zeros((2, 4)), MODEL, (), "float16")
    with pytest.raises(BadInputError, match="probe"):
        AnchorSet(("a",), np.zeros((1, 4)), MODEL, (), "float16", np.zeros(5))


def test_nearest_pairs_matches_brute_force_for_any_block_size() -> None:
    anchors = random_anchors(n=30, dim=8, seed=3)
    sims = anchors.vectors @ anchors.vectors.T
    pairs = sorted(((sims[i, j], i, j) for i in range(30) for j in range(i + 1, 30)), reverse=True)[:6]
    expected = [(anchors.names[i], anchors.names[j]) for _, i, j in pairs]
    for block in (1, 7, 1024):
        found = nearest_pairs(anchors, k=6, block=block)
        assert [(a, b) for a, b, _ in found] == expected
        np.testing.assert_allclose([s for *_, s in found], [s for s, *_ in pairs], atol=1e-5)
    assert len(nearest_pairs(random_anchors(n=3), k=10)) == 3
    assert nearest_pairs(random_anchors(n=1), k=5) == [] and nearest_pairs(anchors, k=0) == []


def test_anchor_module_is_device_side_numpy_only() -> None:
    code = ("import sys, edgecvm.formats.anchors, edgecvm.cli.anchors; "
            "assert not {'torch', 'sentence_transformers', 'transformers'} & set(sys.modules), sys.modules.keys()")
    subprocess.run([sys.executable, "-c", code], check=True)

