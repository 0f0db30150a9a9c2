"""Process-wide settings for a process whose one job is the device (the ``edgecvm`` command).

Six things keep ``learn`` fast and its resident memory small: glibc told to
give freed memory back and to keep one heap for every thread, OpenSSL kept
out of the process, numpy's BLAS on one thread (its pool and ORT's would
thrash the cores), Pillow reusing a freed frame's memory for the next frame,
and clean file-backed pages that only start-up used paged out once the
backbone is warm. Each changes the whole process, so nothing here runs
unless asked: the CLI asks (``open_device(..., tune_process=True)``); a
program that embeds edgecvm chooses. Each does nothing where its mechanism
does not exist (other C libraries, no /proc, no OpenBLAS).
"""

from __future__ import annotations

import ctypes
import logging
import re
import sys
from dataclasses import dataclass

_M_TRIM_THRESHOLD = -1  # glibc mallopt parameters
_M_ARENA_MAX = -8
IMAGE_BLOCKS_CACHED = 3  # a frame, its resize's intermediate and its crop: reuse_image_memory
_MADV_DONTNEED = 4  # Linux madvise advice
_MADV_PAGEOUT = 21  # Linux >= 5.4; EINVAL before
_SMAPS_HEADER = re.compile(r"([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \S+\s*(.*)")
_BLAS_THREAD_SETTERS = (  # numpy >= 2 wheels bundle scipy-openblas; older ones plain OpenBLAS
    "scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
    "openblas_set_num_threads64_", "openblas_set_num_threads",
)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProcessTuning:
    """What ``tune_process`` changed (each False where its mechanism does not exist here)."""

    heap_trimmed: bool
    one_heap: bool
    openssl_kept_out: bool
    blas_single_threaded: bool
    image_memory_reused: bool


def tune_process() -> ProcessTuning:
    """Apply the start-up settings, in the order they need: before any large buffer is freed and before
    anything imports ``numpy.random``. Call ``release_clean_file_pages`` later, once the backbone is warm."""
    return ProcessTuning(heap_trimmed=limit_heap_retention(), one_heap=one_malloc_arena(),
                         openssl_kept_out=keep_openssl_unloaded(),
                         blas_single_threaded=single_threaded_blas(), image_memory_reused=reuse_image_memory())


def limit_heap_retention(threshold: int = 64 * 1024) -> bool:
    """Make glibc hand freed memory back to the OS promptly; True when applied.

    Call once at start-up, before the ONNX Runtime session is created. Sets
    M_TRIM_THRESHOLD (which also stops glibc from raising its mmap threshold
    as large blocks are freed): the transient weight copies ORT makes while
    optimising the graph are then returned instead of staying resident,
    measured -25 MB RSS for Lite0, with no change in inference speed when the
    CPU arena is on. On other C libraries (musl, macOS) nothing changes.
    """
    return _mallopt(_M_TRIM_THRESHOLD, threshold)


def one_malloc_arena() -> bool:
    """Make every thread allocate from glibc's one main heap; True when applied.

    Why: glibc gives each new thread that allocates a heap ("arena") of its
    own, up to 8 per core, and each keeps its own freed memory; the device
    runs several threads that allocate (ONNX Runtime's pool, the pipeline's
    worker, the update thread, a camera's reader, a web server's workers).
    With one heap the trimming of ``limit_heap_retention`` covers them all.
    Measured on ``learn`` (host, Lite0-224 fp32, the bench's 200 camera-sized
    frames, 5 alternating runs each, docs/benchmarks.md): peak RSS 97.3-97.6
    -> 95.5-95.7 MB at the same frames/s (median 94.0 -> 93.8). Threads
    that allocated before the call keep the heap they have.
    """
    return _mallopt(_M_ARENA_MAX, 1)


def _mallopt(parameter: int, value: int) -> bool:
    """glibc's ``mallopt``; False on other C libraries (musl, macOS), where nothing changes."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(parameter, value))
    except (OSError, AttributeError):  # not glibc
        return False


def reuse_image_memory(blocks: int = IMAGE_BLOCKS_CACHED) -> bool:
    """Let Pillow keep the memory of the last ``blocks`` images freed for the next ones; True when applied.

    Why: with the heap trimmed, each decoded camera frame (1.2 MB at 640 x
    480: Pillow keeps RGB in 4 bytes a pixel) and the two images its resize
    makes are fresh mappings that the kernel faults in and zeroes, and unmaps
    again when they are freed, beside the backbone's threads. Pillow's block
    cache (off by default) hands a freed image's memory to the next image.
    Three blocks are the steady state of the pipeline's worker (a frame, the
    resize's intermediate and its output, each reused at its own size); with
    two, the blocks are resized on every frame and nothing is saved. Each
    cached block is at most Pillow's block size (16 MB). Measured on one
    thread over 100 camera-sized frames (docs/benchmarks.md): decode and
    preprocess 2.8 -> 2.1 ms of CPU, 301 -> 22 page faults per frame.
    """
    from PIL import Image

    set_blocks_max = getattr(Image.core, "set_blocks_max", None)
    if set_blocks_max is None:  # a Pillow without its block allocator
        return False
    set_blocks_max(blocks)
    return True


def keep_openssl_unloaded() -> bool:
    """Stop ``numpy.random`` from loading OpenSSL's libcrypto; True when this call prevented it.

    ``np.random.default_rng`` (the replay buffer's) imports ``secrets``, which
    imports ``hmac``, which imports ``_hashlib``: OpenSSL's libcrypto, 3.3 MB
    of RSS (measured) that the device never uses (``integrity`` hashes with
    CPython's built-in sha256 for the same reason). Marking ``_hashlib`` as
    unavailable makes ``hmac`` and ``hashlib`` fall back to CPython's own code.
    Measured on ``learn`` (host, Lite0-224 fp32): peak RSS -3 MB. Call before
    anything imports ``numpy.random``; once libcrypto is loaded it stays.
    """
    if "_hashlib" in sys.modules:
        return False
    sys.modules["_hashlib"] = None  # type: ignore[assignment]  # the import system's "not available" marker
    return True


def release_clean_file_pages() -> int:
    """Drop the pages of clean, read-only file mappings from this process; the resident bytes dropped.

    Why: most of onnxruntime's 25 MB library, and much of Python's and
    numpy's code, runs once (imports, parsing and optimising the graph,
    registering kernels) and never again, yet stays resident: measured 39 MB
    of file-backed RSS in a ``learn`` run, against ~20 MB in use per frame.
    The kernel would evict such pages under memory pressure, but until it
    does they count in RSS, which is what a budget and the OOM killer see.

    Only read-only file mappings without private copies (smaps ``Anonymous:
    0 kB``) are touched, so no content can change: a page needed again is
    mapped back from the file on its next use. Mappings with private copies
    (relocated data, RELRO) are left alone: dropping those would revert them
    to the file.

    Each span is first paged out (``MADV_PAGEOUT``), then unmapped
    (``MADV_DONTNEED``, for what paging out left: pages another process maps,
    dirty ones, files the process may not write). Why not only unmapped:
    kernels with large page-cache folios (ext4 since Linux 6.16) keep a file
    that was just written, such as a library pip installed, in folios of up
    to 2 MB, and one fault maps the whole folio, so after an unmapping the
    code used per frame came back as almost all of onnxruntime's text (22.5
    MB instead of 5.9). Paged out, the folios leave the page cache and the
    pages used again are read back from the file in small folios, once
    (docs/benchmarks.md, A memory figure that holds on another machine). The
    price, also where there are no large folios to undo: those pages come
    from the file (disk, SD card) instead of the page cache, once per start.

    It roughly halves the file-backed part of ``learn``'s RSS at the same
    frames/s. What it cannot do is free anonymous memory: it changes what RSS
    counts, not what the kernel could have reclaimed under pressure anyway.
    """
    if not sys.platform.startswith("linux"):
        return 0
    try:
        with open("/proc/self/smaps") as fh:
            spans = _clean_file_mappings(fh)
        madvise = ctypes.CDLL(None).madvise
    except (OSError, AttributeError):
        return 0
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    released = 0
    for start, end, resident in spans:
        madvise(start, end - start, _MADV_PAGEOUT)  # fails (EINVAL) before Linux 5.4: unmapping alone then
        if madvise(start, end - start, _MADV_DONTNEED) == 0:
            released += resident
    return released


def _clean_file_mappings(smaps) -> list[tuple[int, int, int]]:
    """(start, end, resident bytes) of each resident, read-only file mapping with no private copies."""
    spans = []
    candidate: list[int] | None = None  # [start, end, rss] of the mapping being read, when it qualifies
    for line in smaps:
        header = _SMAPS_HEADER.match(line)
        if header:
            start, end, perms, path = header.groups()
            candidate = [int(start, 16), int(end, 16), 0] if path.startswith("/") and "w" not in perms else None
        elif candidate is not None and line.startswith("Rss:"):
            candidate[2] = int(line.split()[1]) * 1024
        elif candidate is not None and line.startswith("Anonymous:"):
            if int(line.split()[1]) == 0 and candidate[2] > 0:
                spans.append((candidate[0], candidate[1], candidate[2]))
            candidate = None
    return spans


def single_threaded_blas() -> bool:
    """Run numpy's OpenBLAS on one thread (see module docstring); False when no OpenBLAS is loaded."""
    import numpy.linalg  # noqa: F401  (loads numpy's BLAS library, so it shows up in the process's maps)

    try:
        with open("/proc/self/maps") as fh:
            libraries = sorted({line.split()[-1] for line in fh if "openblas" in line.lower() and "/" in line})
    except OSError:
        libraries = []
    for path in libraries:
        library = ctypes.CDLL(path)
        for name in _BLAS_THREAD_SETTERS:
            if hasattr(library, name):
                getattr(library, name)(1)
                return True
    log.debug("numpy's BLAS is not OpenBLAS on a /proc system (%s); its threads are left as they are", libraries)
    return False
