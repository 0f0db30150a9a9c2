"""The checksummed container and atomic writes every file format relies on."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

import numpy as np
import pytest

from edgecvm.errors import BadInputError, IntegrityError
from edgecvm.formats.integrity import atomic_write_bytes, load_container, save_container, sha256_file

FIX = "rebuild it"


def _save(path, **meta):
    arrays = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "names": np.frombuffer(b"a\nb", np.uint8)}
    save_container(path, "edgecvm.test", 1, arrays, {"model": "m", **meta})
    return arrays


def test_round_trip_returns_same_arrays_and_meta(tmp_path):
    path = tmp_path / "x.npz"
    arrays = _save(path)
    loaded, meta = load_container(path, "edgecvm.test", (1,), FIX)
    assert meta["model"] == "m" and meta["format"] == "edgecvm.test"
    np.testing.assert_array_equal(loaded["w"], arrays["w"])


@pytest.mark.parametrize("offset_frac", [0.0, 0.1, 0.5, 0.9, 0.97, 0.999])
def test_bit_flip_anywhere_is_detected(tmp_path, offset_frac):
    path = tmp_path / "x.npz"
    _save(path)
    data = bytearray(path.read_bytes())
    data[int(len(data) * offset_frac)] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=str(path.name)):
        load_container(path, "edgecvm.test", (1,), FIX)


@pytest.mark.parametrize("keep", [0, 10, 200])
def test_truncation_is_detected(tmp_path, keep):
    path = tmp_path / "x.npz"
    _save(path)
    path.write_bytes(path.read_bytes()[:keep])
    with pytest.raises(IntegrityError, match="x.npz"):
        load_container(path, "edgecvm.test", (1,), FIX)


def test_wrong_format_and_version_are_refused(tmp_path):
    path = tmp_path / "x.npz"
    _save(path)
    with pytest.raises(IntegrityError, match="expected a edgecvm.other"):
        load_container(path, "edgecvm.other", (1,), FIX)
    with pytest.raises(IntegrityError, match="version 1 is not supported"):
        load_container(path, "edgecvm.test", (2,), FIX)


def test_missing_file_names_it_and_the_fix(tmp_path):
    with pytest.raises(BadInputError, match=r"nope\.npz: no such file; rebuild it"):
        load_container(tmp_path / "nope.npz", "edgecvm.test", (1,), FIX)


@pytest.mark.parametrize("member", [np.ones(3, np.complex64), np.array(["a", "b"]), np.zeros(2, "m8[s]")])
def test_members_that_are_not_real_numbers_are_refused(tmp_path, member):
    """Well hashed but written by something else: a complex weight would be cast and silently lose its imaginary part."""
    path = tmp_path / "x.npz"
    save_container(path, "edgecvm.test", 1, {"w": np.zeros(3, np.float32), "odd": member}, {})
    with pytest.raises(IntegrityError, match=r"x\.npz: malformed edgecvm.test file \(members \['odd'\] are not arrays of real"):
        load_container(path, "edgecvm.test", (1,), FIX)


def test_plain_npz_is_refused(tmp_path):
    path = tmp_path / "plain.npz"
    np.savez(path, w=np.zeros(3))
    with pytest.raises(IntegrityError, match="checksum mismatch"):
        load_container(path, "edgecvm.test", (1,), FIX)


def test_container_is_a_plain_npz_and_deterministic(tmp_path):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    _save(a)
    _save(b)
    assert a.read_bytes() == b.read_bytes()
    with np.load(a, allow_pickle=False) as npz:
        assert set(npz.files) == {"__meta__", "w", "names"}


@pytest.mark.parametrize("array", [np.random.default_rng(0).random((700, 1300), dtype=np.float32),
                                   np.zeros((0, 5), np.float16), np.array([True, False]), np.arange(7, dtype=np.int64)])
def test_members_are_the_npy_files_numpy_writes(tmp_path, array):
    """The container writes each array itself (in slices); the member must still be exactly numpy's .npy file."""
    import io
    import zipfile

    path = tmp_path / "x.npz"
    save_container(path, "edgecvm.test", 1, {"a": array}, {})
    expected = io.BytesIO()
    np.lib.format.write_array(expected, array, allow_pickle=False)
    with zipfile.ZipFile(path) as zf:
        assert zf.read("a.npy") == expected.getvalue()


def _traced_growth(action: Callable[[], object]) -> int:
    """Bytes by which Python's and numpy's traced allocations peak above where they stood before ``action``."""
    import tracemalloc

    was_tracing = tracemalloc.is_tracing()  # another test may have left it on: measure from here
    if not was_tracing:
        tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        action()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        if not was_tracing:
            tracemalloc.stop()
    return peak - before


def test_saving_a_large_array_holds_no_copy_of_it(tmp_path):
    """A checkpoint of the 6.5 MB scatter must not briefly need a second 6.5 MB."""
    big = np.ones((1280, 1280), dtype=np.float32)
    grew = _traced_growth(lambda: save_container(tmp_path / "x.npz", "edgecvm.test", 1, {"scatter": big}, {}))
    assert grew < big.nbytes / 2, f"peak +{grew / 2**20:.1f} MB while saving {big.nbytes / 2**20:.1f} MB"


def test_loading_a_container_holds_its_arrays_once(tmp_path):
    """Resuming must not hold the file's bytes (or a copy of them) next to the arrays made from them."""
    big = np.arange(1280 * 1280, dtype=np.float32).reshape(1280, 1280)
    save_container(tmp_path / "x.npz", "edgecvm.test", 1, {"scatter": big}, {})
    loaded: list[dict[str, np.ndarray]] = []
    grew = _traced_growth(lambda: loaded.append(load_container(tmp_path / "x.npz", "edgecvm.test", (1,), "fix")[0]))
    np.testing.assert_array_equal(loaded[0]["scatter"], big)
    assert grew < 1.5 * big.nbytes, f"peak +{grew / 2**20:.1f} MB while loading {big.nbytes / 2**20:.1f} MB"


def test_atomic_write_keeps_previous_version(tmp_path):
    path = tmp_path / "state.bin"
    atomic_write_bytes(path, b"one")
    atomic_write_bytes(path, b"two", keep_previous=True)
    assert path.read_bytes() == b"two"
    assert (tmp_path / "state.bin.prev").read_bytes() == b"one"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_failed_write_leaves_target_intact_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "state.bin"
    atomic_write_bytes(path, b"good")

    def full_disk(*_args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError):
        atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.bin"]


def test_sha256_file_changes_with_content(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"x" * 3_000_000)
    b.write_bytes(b"x" * 2_999_999 + b"y")
    assert sha256_file(a) != sha256_file(b)
    with pytest.raises(BadInputError, match="cannot read"):
        sha256_file(tmp_path / "missing")
