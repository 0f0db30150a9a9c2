"""Fault injectors shared by the reliability suite: damaged bytes, failing writes.

A flaky SD card or a power cut damages a file in three typical ways: the tail
is missing (truncate), a sector reads back as zeros (zero), or a single bit
rots (bit flip). ``CORRUPTIONS`` is every kind at several offsets through the
file, so each persisted format is hit in its header, its body and its tail.
"""

from __future__ import annotations

import errno
from pathlib import Path

from edgecvm.formats.bundle import Manifest, write_manifest
from edgecvm.formats.integrity import sha256_file

KINDS = ("truncate", "zero", "bitflip")
OFFSETS = (0.0, 0.3, 0.6, 0.999)  # fraction of the file size; 0.999 is the last bytes
CORRUPTIONS = [(kind, frac) for kind in KINDS for frac in OFFSETS]
CORRUPTION_IDS = [f"{kind}@{frac}" for kind, frac in CORRUPTIONS]
ZERO_SPAN = 64  # bytes zeroed: a partly-written sector


def _zero(data: bytearray, offset: int) -> None:
    """Zero ``ZERO_SPAN`` bytes at the first non-zero byte at or after ``offset``.

    Zeroing bytes that are already zero would not damage anything, so the
    window moves to real content (searching backwards when the tail is zeros).
    """
    start = next((i for i in range(offset, len(data)) if data[i]), None)
    if start is None:
        start = next(i for i in range(min(offset, len(data) - 1), -1, -1) if data[i])
        start = max(0, start - ZERO_SPAN + 1)
    data[start:start + ZERO_SPAN] = bytes(len(data[start:start + ZERO_SPAN]))


def corrupt_bytes(data: bytes, kind: str, frac: float) -> bytes:
    """``data`` damaged by ``kind`` at ``frac`` of its length; always differs from ``data``."""
    if not data:
        raise ValueError("cannot corrupt an empty file")
    offset = min(int(len(data) * frac), len(data) - 1)
    out = bytearray(data)
    if kind == "truncate":
        del out[offset:]
    elif kind == "zero":
        _zero(out, offset)
    elif kind == "bitflip":
        out[offset] ^= 0x04
    else:
        raise ValueError(f"unknown corruption {kind!r}")
    assert bytes(out) != data
    return bytes(out)


def corrupt_file(path: Path, kind: str, frac: float) -> None:
    """Damage ``path`` in place (see ``corrupt_bytes``)."""
    path.write_bytes(corrupt_bytes(path.read_bytes(), kind, frac))


def raise_oserror(code: int):
    """A replacement for a write function that fails like a full or read-only disk."""

    def failing(*_args, **_kwargs):
        raise OSError(code, f"{errno.errorcode[code]}: simulated", "state.npz")

    return failing


def one_line_error(stderr: str) -> str:
    """The single ``edgecvm: error:`` line a failing command must print (and no traceback)."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("edgecvm: error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def seal_bundle(folder: Path, anchors_file: str, feature_dim: int, concept_dim: int) -> Manifest:
    """Write a valid manifest over the files already in ``folder`` (a hand-made bundle)."""
    files = {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.name != "manifest.json"}
    manifest = Manifest(
        format="edgecvm.bundle", version=1, backbone="efficientnet-lite0", input_size=8, resize=10,
        interpolation="bilinear", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), feature_dim=feature_dim,
        concept_dim=concept_dim, precision="fp32", head_init="conse", anchors_file=anchors_file,
        anchors_sha256=files[anchors_file], anchors_model="test-model", files=files,
    )
    return write_manifest(folder, manifest)
