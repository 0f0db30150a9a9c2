"""Process set-up: glibc heap retention and one heap for all threads, OpenSSL kept out, Pillow reusing image
memory, start-up pages released (mostly Linux-specific)."""

from __future__ import annotations

import io
import mmap
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from edgecvm.device.process_tuning import _clean_file_mappings, limit_heap_retention, release_clean_file_pages

LINUX = sys.platform.startswith("linux")


def test_limit_heap_retention_applies_on_glibc_linux():
    applied = limit_heap_retention()
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert applied is True
    else:
        assert applied is False


_ARENA_PROBE = """
import ctypes, sys, tempfile, threading
from edgecvm.device.process_tuning import one_malloc_arena
applied = one_malloc_arena() if sys.argv[1] == "one" else None
keep = []
together = threading.Barrier(4)
def work():
    keep.append([bytearray(1000) for _ in range(100)])  # above pymalloc's 512 B: glibc's malloc
    together.wait()  # all four alive at once: none hands its heap on to the next
threads = [threading.Thread(target=work) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
libc = ctypes.CDLL("libc.so.6")
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = (ctypes.c_char_p, ctypes.c_char_p)
libc.malloc_info.argtypes = (ctypes.c_int, ctypes.c_void_p)
libc.fclose.argtypes = (ctypes.c_void_p,)
with tempfile.NamedTemporaryFile(suffix=".xml") as out:
    fp = libc.fopen(out.name.encode(), b"w")
    libc.malloc_info(0, fp)
    libc.fclose(fp)
    print(applied, open(out.name).read().count("<heap nr="))
"""


@pytest.mark.skipif(not (LINUX and platform.libc_ver()[0] == "glibc"), reason="glibc's heaps")
def test_one_malloc_arena_keeps_every_thread_on_one_heap():
    def heaps(mode: str) -> list[str]:
        return subprocess.run([sys.executable, "-c", _ARENA_PROBE, mode], capture_output=True, text=True,
                              check=True).stdout.split()

    assert heaps("default") == ["None", "5"]  # glibc's own choice: the main heap and one per thread
    assert heaps("one") == ["True", "1"]


_IMAGE_MEMORY_PROBE = """
import io
from PIL import Image
from edgecvm.device.process_tuning import reuse_image_memory
frame = io.BytesIO()
Image.new("RGB", (640, 480), (90, 120, 30)).save(frame, "JPEG")
def decode():
    image = Image.open(io.BytesIO(frame.getvalue()))
    image.load()
    return image.resize((224, 224), Image.Resampling.BILINEAR, box=(0, 0, 480, 480))
decode()
before = Image.core.get_stats()["reused_blocks"]
for _ in range(5):
    decode()
without = Image.core.get_stats()["reused_blocks"] - before
applied = reuse_image_memory()
for _ in range(3):  # the cache's order settles
    decode()
before = Image.core.get_stats()
for _ in range(5):
    decode()
after = Image.core.get_stats()
print(applied, without, after["reused_blocks"] - before["reused_blocks"],
      after["reallocated_blocks"] - before["reallocated_blocks"])
"""


def test_reuse_image_memory_hands_a_freed_frames_memory_to_the_next_frame():
    out = subprocess.run([sys.executable, "-c", _IMAGE_MEMORY_PROBE], capture_output=True, text=True, check=True)
    applied, without, reused, resized = out.stdout.split()
    assert applied == "True" and int(without) == 0
    # each of 5 frames: the decoded frame, the resize's intermediate and its output, each in a block of its own size
    assert int(reused) == 15 and int(resized) == 0


_OPENSSL_PROBE = """
import sys
from edgecvm.device.process_tuning import keep_openssl_unloaded
prevented = keep_openssl_unloaded()
import hmac
import numpy as np
np.random.default_rng(0)
assert hmac.compare_digest(b"a", b"a") and not hmac.compare_digest(b"a", b"b")
with open("/proc/self/maps") as fh:
    print(prevented, any("libcrypto" in line for line in fh))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_numpy_random_no_longer_loads_openssl():
    """np.random -> secrets -> hmac -> _hashlib would map libcrypto (3.3 MB RSS) into the device process."""
    out = subprocess.run([sys.executable, "-c", _OPENSSL_PROBE], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "False"]


_COMMAND_PROBE = """
import atexit, sys
def report():
    with open("/proc/self/maps") as fh:
        print("libcrypto mapped:", "libcrypto" in fh.read())
atexit.register(report)
from edgecvm.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_a_learning_command_runs_without_openssl(tmp_path: Path, test_bundle: Path, samples_dir: Path):
    """Nothing the device imports (the ConSE row cache hashes rows with BLAKE2) may load OpenSSL's libcrypto."""
    out = subprocess.run([sys.executable, "-c", _COMMAND_PROBE, "learn", "--bundle", str(test_bundle), "--stream",
                          str(samples_dir / "train"), "--state", str(tmp_path / "state"), "--limit", "40",
                          "--shuffle", "0", "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "libcrypto mapped: False"


_SMAPS = """\
00400000-00452000 r-xp 00000000 08:02 173521      /usr/lib/libcode.so
Rss:                 200 kB
Anonymous:             0 kB
00652000-00653000 r--p 00052000 08:02 173521      /usr/lib/libcode.so
Rss:                   4 kB
Anonymous:             4 kB
00653000-00654000 rw-p 00053000 08:02 173521      /usr/lib/libcode.so
Rss:                   4 kB
Anonymous:             0 kB
00700000-00800000 r--p 00000000 08:02 173522      /data/never touched.bin
Rss:                   0 kB
Anonymous:             0 kB
00900000-00a00000 r--p 00000000 08:02 173523      /data/weights (deleted)
Rss:                 512 kB
Anonymous:             0 kB
01000000-02000000 rw-p 00000000 00:00 0           [heap]
Rss:                8192 kB
Anonymous:          8192 kB
7ffd000-7fff000 r-xp 00000000 00:00 0             [vdso]
Rss:                   8 kB
Anonymous:             0 kB
"""


def test_only_resident_read_only_file_mappings_without_private_copies_are_released():
    """Relocated data (private copies), writable or anonymous mappings and the vdso must never be dropped."""
    assert _clean_file_mappings(io.StringIO(_SMAPS)) == [
        (0x00400000, 0x00452000, 200 * 1024),  # library code
        (0x00900000, 0x00a00000, 512 * 1024),  # a mapped file, even one replaced on disk since
    ]


def _mapping_rss_kb(path: Path) -> int:
    """RSS of this process's mapping of ``path``, from /proc/self/smaps."""
    with open("/proc/self/smaps") as fh:
        lines = fh.read().splitlines()
    start = next(i for i, line in enumerate(lines) if line.endswith(str(path)))
    return next(int(line.split()[1]) for line in lines[start + 1:] if line.startswith("Rss:"))


@pytest.mark.skipif(not LINUX, reason="reads /proc/self/smaps")
def test_released_pages_leave_rss_and_read_back_unchanged(tmp_path: Path):
    path = tmp_path / "weights.bin"
    data = bytes(range(256)) * (1 << 14)  # 4 MB
    path.write_bytes(data)
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        assert mapped[::4096] == data[::4096]  # touch every page
        assert _mapping_rss_kb(path) == 4096
        assert release_clean_file_pages() >= 4096 * 1024
        assert _mapping_rss_kb(path) == 0
        assert mapped[:] == data  # mapped back, byte for byte
        assert _mapping_rss_kb(path) == 4096


@pytest.mark.skipif(not LINUX, reason="reads /proc/self/smaps")
def test_a_page_used_again_after_release_comes_back_alone_not_as_its_whole_folio(tmp_path: Path):
    """A file just written (as pip writes a library) may sit in the page cache as large folios, and one fault then
    maps a whole folio; paged out on release, the page used again comes back in a small one."""
    path = tmp_path / "library.so"
    data = bytes(range(256)) * (1 << 15)  # 8 MB
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())  # clean: the kernel may page it out
    page = 3 << 20
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        assert mapped[page] == data[page]
        one_touch_kb = _mapping_rss_kb(path)
        if one_touch_kb <= 256:
            pytest.skip(f"this kernel mapped {one_touch_kb} KB for one touch: no large folios to undo here")
        if _file_system(path) == "tmpfs":
            pytest.skip("tmpfs: its pages can only be paged out to swap")
        assert release_clean_file_pages() >= one_touch_kb * 1024
        assert _mapping_rss_kb(path) == 0
        assert mapped[page] == data[page]
        assert _mapping_rss_kb(path) <= 256  # fault-around of a small folio (64 KB by default), not 2 MB
        assert mapped[:] == data  # read back from the file, byte for byte


def _file_system(path: Path) -> str:
    """The type of the file system holding ``path`` (the longest mount point above it, from /proc/self/mounts)."""
    with open("/proc/self/mounts") as fh:
        mounts = [line.split()[1:3] for line in fh]
    resolved = str(path.resolve())
    return max(((point, kind) for point, kind in mounts
                if resolved == point or resolved.startswith(point.rstrip("/") + "/")), key=lambda m: len(m[0]))[1]
