"""Whether ONNX Runtime's int8 products are exact on this CPU, and asking for exact ones where they are not.

An int8 graph (the 160 px backbone's QDQ convolutions, the text encoder's
dynamically quantised matrix products) multiplies uint8 activations by int8
weights. On x86-64 without VNNI, ONNX Runtime's kernels sum each pair of
neighbouring products with ``VPMADDUBSW``, in saturating 16-bit arithmetic:
255 x 127 x 2 = 64,770 is clamped to 32,767. Per-channel weights span the
full -127..127, so the clamp is hit: on such a CPU (a 2-core AMD EPYC with
AVX2, docs/benchmarks.md) the Lite0-160 int8 backbone's features agreed with
fp32 at mean cosine 0.88 instead of 0.99. ONNX Runtime's session entry
``session.x64quantprecision`` rewrites the weights to uint8 and runs its
uint8 x uint8 kernels, which sum in 32 bits: the same model then agrees at
0.99, for some of the speed the fast kernels had. VNNI sums in 32 bits by
itself, and ONNX Runtime names only x86 for the clamp (its ARM kernels do
not clamp), so elsewhere the entry is left unset.
"""

from __future__ import annotations

import platform
from functools import cache
from pathlib import Path

import onnxruntime as ort

X86_MACHINES = frozenset({"x86_64", "amd64", "i386", "i686", "x86"})
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni"})
EXACT_INT8_ENTRY = "session.x64quantprecision"  # ONNX Runtime's kOrtSessionOptionsAvx2PrecisionMode


def int8_sums_saturate(machine: str, cpuinfo: str | None) -> bool:
    """True when ONNX Runtime's fast int8 kernels would clamp pair sums on this CPU: an x86 machine whose
    ``/proc/cpuinfo`` text lists no VNNI flag, or whose flags cannot be read (assumed the worst)."""
    if machine.lower() not in X86_MACHINES:
        return False
    if cpuinfo is None:
        return True
    flags = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags.update(value.split())
    return not flags & VNNI_FLAGS


@cache
def this_cpu_saturates() -> bool:
    try:
        cpuinfo: str | None = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = None
    return int8_sums_saturate(platform.machine(), cpuinfo)


def ask_exact_int8(options: ort.SessionOptions) -> ort.SessionOptions:
    """``options`` with exact int8 sums requested where this CPU needs it (a no-op for fp32 graphs)."""
    if this_cpu_saturates():
        options.add_session_config_entry(EXACT_INT8_ENTRY, "1")
    return options
