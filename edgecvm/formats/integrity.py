"""Checksummed containers and atomic writes: the storage layer every file format uses.

Every file edgecvm writes (anchor files, heads, learner state) is one
*container*: an uncompressed ``.npz`` of plain arrays plus a ``__meta__`` entry
holding JSON that names the format and version. The zip's archive comment, the
file's last 64 bytes, is the sha256 of everything before it, so a truncated,
bit-flipped or edited file is caught at load instead of producing silently
wrong output.
``allow_pickle=False`` everywhere: loading a file never runs code.

Writes go to a temp file in the same folder, are fsynced, then renamed over the
target, so a power cut leaves either the old or the new file, never half of one.
"""

from __future__ import annotations

import contextlib
import glob
import importlib
import io
import json
import os
import shutil
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import numpy as np

from edgecvm.errors import BadInputError, IntegrityError

T = TypeVar("T")

META_KEY = "__meta__"
_CHUNK = 1 << 20
_DIGEST_LEN = 64  # hex sha256 in the zip archive comment


def _builtin_hash(name: str, modules: tuple[str, ...]) -> Callable[..., Any]:
    """CPython's own ``name`` hash, from the first of ``modules`` that has it, else hashlib's.

    Why not plain ``hashlib``: importing it loads OpenSSL's libcrypto, 3.5 MB of
    RSS (measured) on a device whose whole learner must fit in ~100 MB; the
    built-in code gives the same digests (sha256 ~6x slower: 43 ms for the
    13.5 MB Lite0 backbone on the host, which only start-up and checkpoints
    pay).
    """
    for module in modules:
        with contextlib.suppress(ImportError, AttributeError):
            return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]
    return getattr(importlib.import_module("hashlib"), name)  # type: ignore[no-any-return]


new_sha256 = _builtin_hash("sha256", ("_sha2", "_sha256"))  # _sha2 from CPython 3.12, _sha256 before
new_blake2b = _builtin_hash("blake2b", ("_blake2",))


def sha256_bytes(data: bytes) -> str:
    return new_sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Streamed sha256 of a file, so a 20 MB ONNX model is not read into memory twice."""
    digest = new_sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                digest.update(chunk)
    except OSError as exc:
        raise BadInputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return digest.hexdigest()


def _create_temp(target: Path) -> tuple[int, str]:
    """A new temp file next to ``target``, created with mode 0666 so the kernel applies the caller's umask.

    Why not ``tempfile.mkstemp``: its 0600 would make bundles unreadable to a
    service user, and fixing that with chmod needs the umask, which can only be
    read by changing it (process-wide, racy in a host program's threads).
    """
    for _ in range(100):
        name = str(target.parent / f".{target.name}.{os.urandom(6).hex()}.tmp")
        try:
            return os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666), name
        except FileExistsError:
            continue
    raise FileExistsError(f"{target.parent}: no free temporary file name for {target.name}")


def _fsync_dir(folder: Path) -> None:
    # Directory fsync makes the rename itself durable; not every OS allows it.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def previous_path(path: Path) -> Path:
    return path.with_name(path.name + ".prev")


def read_latest_or_previous(path: Path, read: Callable[[Path], T], what: str) -> tuple[T, Path, IntegrityError | None]:
    """``read`` the latest file written with ``keep_previous``, or the one before it when the latest is unusable:
    (what was read, the file it came from, why the latest was not used). ``IntegrityError`` naming both (``what``:
    the files, in its message) when neither can be read."""
    try:
        return read(path), path, None
    except IntegrityError as latest_error:
        prev = previous_path(path)
        if not prev.exists():
            raise
        try:
            return read(prev), prev, latest_error
        except IntegrityError as prev_error:
            raise IntegrityError(f"both {what} are unusable: {latest_error} | {prev_error}") from None


def _keep_previous(path: Path) -> None:
    """Make ``path.prev`` a copy of the current file before it is replaced."""
    prev = previous_path(path)
    tmp_prev = path.with_name(path.name + ".prev.tmp")
    try:
        with contextlib.suppress(FileNotFoundError):
            tmp_prev.unlink()
        os.link(path, tmp_prev)  # cheap and atomic where hard links exist
    except OSError:
        shutil.copyfile(path, tmp_prev)  # FAT/exFAT SD cards have no hard links
    os.replace(tmp_prev, prev)


def remove_stale_temps(path: str | os.PathLike[str]) -> list[Path]:
    """Delete the temp files a crash mid-write left next to ``path``; returns those removed.

    A power cut during ``_atomic_write`` leaves ``.<name>.*.tmp`` (and maybe
    ``<name>.prev.tmp``) behind; on a device that loses power often they would
    fill the card. Only the single writer of ``path`` may call this (at start):
    it cannot tell another process's write in flight from a dead one. Failures
    (a read-only card) are ignored: nothing can be written there anyway.
    """
    target = Path(path)
    stale = [*target.parent.glob(f".{glob.escape(target.name)}.*.tmp"), target.with_name(target.name + ".prev.tmp")]
    removed = []
    for temp in stale:
        with contextlib.suppress(OSError):
            temp.unlink()
            removed.append(temp)
    return removed


def _atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], None], keep_previous: bool) -> None:
    """Run ``write`` on a temp file next to ``path``, fsync it, then rename it over ``path``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = _create_temp(target)
    try:
        with os.fdopen(fd, "w+b") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if keep_previous and target.exists():
            _keep_previous(target)
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(target.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, keep_previous: bool = False) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new one, whole.

    With ``keep_previous`` the file being replaced stays available as ``<name>.prev``.
    Raises ``OSError`` (e.g. ENOSPC, EROFS) unchanged so callers can decide to keep
    running in memory; the target is untouched in that case.
    """
    _atomic_write(path, lambda fh: fh.write(data), keep_previous)


def _write_npy(fh: BinaryIO, arr: np.ndarray) -> None:
    """``arr`` (C-contiguous) as an .npy file, the bytes of ``np.lib.format.write_array``, without copying it.

    Why not ``write_array``: into a zip member (not a real file) it writes
    ``tobytes()`` copies of up to 16 MB, so checkpointing the 6.5 MB scatter or
    the 5 MB replay buffer briefly held a second copy of it. Here the array's
    own memory is written in ``_CHUNK`` slices.
    """
    if arr.dtype.hasobject:
        raise ValueError("object arrays cannot be saved")
    np.lib.format.write_array_header_1_0(fh, np.lib.format.header_data_from_array_1_0(arr))
    data = memoryview(arr.reshape(-1).view(np.uint8)) if arr.size else memoryview(b"")
    for start in range(0, len(data), _CHUNK):
        fh.write(data[start: start + _CHUNK])


def _write_container(
    fh: BinaryIO, fmt: str, version: int, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]
) -> str:
    """Write a container into the seekable, readable ``fh``; returns the sha256 of what was written.

    The zip is written straight into ``fh`` and hashed by reading it back in
    chunks, so a checkpoint of many MB needs no in-memory copy of itself.
    """
    if META_KEY in arrays:
        raise ValueError(f"array name {META_KEY!r} is reserved")
    full_meta = {**meta, "format": fmt, "version": version}
    members = {META_KEY: np.frombuffer(json.dumps(full_meta, sort_keys=True).encode(), dtype=np.uint8)}
    members.update({k: np.ascontiguousarray(v) for k, v in arrays.items()})
    with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, arr in members.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(info, "w", force_zip64=True) as member:
                _write_npy(member, arr)
        zf.comment = b"0" * _DIGEST_LEN
    body_len = fh.tell() - _DIGEST_LEN
    fh.seek(0)
    digest = new_sha256()
    remaining = body_len
    while remaining:
        chunk = fh.read(min(_CHUNK, remaining))
        if not chunk:
            raise OSError(f"container shrank while being hashed ({remaining} bytes missing)")
        digest.update(chunk)
        remaining -= len(chunk)
    stamp = digest.hexdigest().encode()
    fh.seek(body_len)
    fh.write(stamp)
    digest.update(stamp)
    return digest.hexdigest()


def encode_container(fmt: str, version: int, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> bytes:
    """Serialise arrays + metadata into container bytes (see module docstring).

    The archive is a plain zip of ``.npy`` members (``np.load`` reads it) whose
    archive comment, the last bytes of the file, is the hex sha256 of every byte
    before it. So any flipped bit anywhere, including zip headers ``np.load``
    would not check, and any truncation fail verification.
    """
    buf = io.BytesIO()
    _write_container(buf, fmt, version, arrays, meta)
    return buf.getvalue()


def save_container(
    path: str | os.PathLike[str],
    fmt: str,
    version: int,
    arrays: Mapping[str, np.ndarray],
    meta: Mapping[str, Any],
    keep_previous: bool = False,
) -> str:
    """Atomically write a container, streamed to disk; returns the sha256 of the written file."""
    written: list[str] = []
    _atomic_write(path, lambda fh: written.append(_write_container(fh, fmt, version, arrays, meta)), keep_previous)
    return written[0]


def _digest_matches(fh: BinaryIO) -> bool:
    """The sha256 of everything before the last ``_DIGEST_LEN`` bytes equals those bytes (read in chunks)."""
    body_len = os.fstat(fh.fileno()).st_size - _DIGEST_LEN
    if body_len <= 0:
        return False
    digest = new_sha256()
    while body_len > 0:
        chunk = fh.read(min(_CHUNK, body_len))
        if not chunk:
            return False
        digest.update(chunk)
        body_len -= len(chunk)
    return digest.hexdigest().encode() == fh.read(_DIGEST_LEN)


def _read_members(fh: BinaryIO, path: Path, fmt: str, fix: str) -> tuple[Any, dict[str, np.ndarray]]:
    """The metadata and arrays of a verified container; ``IntegrityError`` when they are not edgecvm's."""
    try:
        with np.load(fh, allow_pickle=False) as npz:
            if META_KEY not in npz.files:
                raise IntegrityError(f"{path}: not an edgecvm {fmt} file (no metadata); {fix}")
            meta = json.loads(npz[META_KEY].tobytes().decode())
            arrays = {name: npz[name] for name in npz.files if name != META_KEY}
        # np.load returns raw bytes, not an array, for a member without the .npy header; and every edgecvm file
        # holds real numbers (bool, int, float): a complex member would otherwise be cast, its imaginary part dropped.
        odd = sorted(name for name, value in arrays.items()
                     if not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf")
        if odd:
            raise IntegrityError(f"{path}: malformed {fmt} file (members {odd} are not arrays of real numbers); {fix}")
    except IntegrityError:
        raise
    except Exception as exc:  # a well-hashed but malformed file: written by something else
        raise IntegrityError(f"{path}: malformed {fmt} file ({type(exc).__name__}); {fix}") from None
    return meta, arrays


def load_container(
    path: str | os.PathLike[str], fmt: str, versions: tuple[int, ...], fix: str
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Load and verify a container of format ``fmt``.

    ``fix`` is appended to every error so the one-line message says what to do
    (e.g. "rebuild it with `edgecvm anchors build`").
    Raises ``IntegrityError`` for anything unreadable, mismatched or tampered.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: no such file; {fix}")
    # Read twice from one open file: hashed in chunks, then parsed by np.load member by member. Reading it
    # into memory first held the file's bytes next to the arrays made from them (and a slice of the bytes,
    # a third copy, while hashing): resuming a 12 MB lda state peaked at 3x its size, now at 1x. One open
    # file, so an atomic replace between the two reads cannot pair one file's hash with another's arrays.
    try:
        with path.open("rb") as fh:
            if not _digest_matches(fh):
                raise IntegrityError(f"{path}: checksum mismatch (truncated, corrupt or modified {fmt} file); {fix}")
            fh.seek(0)
            meta, arrays = _read_members(fh, path, fmt, fix)
    except OSError as exc:
        raise BadInputError(f"{path}: cannot read ({exc.strerror or exc}); {fix}") from None
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise IntegrityError(f"{path}: expected a {fmt} file, found {found!r}; {fix}")
    if meta.get("version") not in versions:
        raise IntegrityError(
            f"{path}: {fmt} version {meta.get('version')!r} is not supported (supported: {list(versions)}); {fix}"
        )
    return arrays, meta
