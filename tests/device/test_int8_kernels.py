"""Exact int8 sums where ONNX Runtime's fast kernels would clamp them: x86 without VNNI."""

from __future__ import annotations

import onnxruntime as ort
import pytest

from edgecvm.device import int8_kernels
from edgecvm.device.int8_kernels import EXACT_INT8_ENTRY, ask_exact_int8, int8_sums_saturate

AVX2_ONLY = "processor\t: 0\nflags\t\t: fpu sse4_1 avx avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu sse4_1 avx avx2 fma\n"


@pytest.mark.parametrize(("machine", "cpuinfo", "saturates"), [
    ("x86_64", AVX2_ONLY, True),
    ("x86_64", AVX2_ONLY.replace("fma", "fma avx512f avx512_vnni"), False),
    ("x86_64", AVX2_ONLY.replace("fma", "fma avx_vnni"), False),
    ("AMD64", None, True),  # flags unreadable (not Linux): assume the worst
    ("aarch64", "Features\t: fp asimd evtstrm crc32\n", False),  # ARM kernels never clamp
    ("armv7l", None, False),
])
def test_only_x86_without_vnni_saturates(machine: str, cpuinfo: str | None, saturates: bool) -> None:
    assert int8_sums_saturate(machine, cpuinfo) is saturates


def test_vnni_named_outside_the_flags_line_does_not_count() -> None:
    assert int8_sums_saturate("x86_64", "model name\t: avx512_vnni marketing name\n" + AVX2_ONLY)


@pytest.mark.parametrize("saturates", [True, False])
def test_the_entry_is_set_only_where_sums_saturate(monkeypatch: pytest.MonkeyPatch, saturates: bool) -> None:
    monkeypatch.setattr(int8_kernels, "this_cpu_saturates", lambda: saturates)
    options = ask_exact_int8(ort.SessionOptions())
    if saturates:
        assert options.get_session_config_entry(EXACT_INT8_ENTRY) == "1"
    else:
        with pytest.raises(RuntimeError, match="does not have configuration"):
            options.get_session_config_entry(EXACT_INT8_ENTRY)
