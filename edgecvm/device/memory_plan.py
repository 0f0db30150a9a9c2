"""The memory plan: what the learner process will hold, checked against the profile before starting.

A device with 512 MB shared by the OS and other services cannot afford to find
out at frame 10,000 that learning does not fit. ``plan_memory`` adds up every
large consumer *before* the stream starts and ``MemoryPlan.check`` refuses to
start (exit 3) with a table when the total exceeds ``memory_budget_mb``. While
running, ``RssMonitor`` samples the real resident set size and lets the learner
shed replay samples if the process goes over budget anyway.

Items that are not plain array sizes (the runtime baseline, the ONNX Runtime
session, activations, a checkpoint) are constants measured with the current
code on x86-64 and recorded with the measured ``learn`` peaks in
docs/benchmarks.md. They are meant to err on the side of refusing: a plan a few
MB high costs a profile some headroom, a plan too low costs an OOM kill in the
field. Re-measure them when a dependency or the runtime set-up changes.

Resident memory is of two kinds, and the plan keeps them apart (``PlanItem.
file_backed``). Anonymous pages (heap, arenas, ORT's buffers) exist only
because the process holds them. File-backed pages (the code of Python, numpy,
onnxruntime and the mapped files) are clean copies of the page cache: how
many of them RSS counts depends on the machine (what the page cache holds,
the kernel's fault-around and large folios), not on the process, and the
kernel drops them under pressure before anything is killed. So the plan
counts a fixed file-backed working set, and both ``edgecvm bench``'s verdict
and the ``RssMonitor`` of ``learn`` judge the anonymous RSS plus that
allowance (docs/benchmarks.md).
"""

from __future__ import annotations

import logging
import os
import resource
import sys
from collections.abc import Callable
from dataclasses import dataclass

from edgecvm.device.frame_size import CAPTURE_SIZE
from edgecvm.device.profiles import DeviceProfile
from edgecvm.errors import BudgetExceededError
from edgecvm.learning.learner import Learner
from edgecvm.learning.replay import BYTES_PER_VALUE, ReplayBuffer

MB = 1 << 20
BASELINE_BYTES = 28 * MB  # anonymous, after start-up (RssAnon 28.2 MB measured): see module docstring
FILE_BACKED_BYTES = 24 * MB  # code and mapped files in use while learning (RssFile 23.3 MB at learn's peak)
SESSION_FACTOR = {"all": 3.7, "extended": 2.0, "basic": 2.0, "disable": 2.0}  # x backbone.onnx size
SESSION_FIXED_TRIMMED = 4 * MB  # + SESSION_FACTOR_TRIMMED x the model, after process_tuning.limit_heap_retention()
SESSION_FACTOR_TRIMMED = 1.0
ACTIVATION_BYTES_224 = 30 * MB  # per frame in a batch, at 224 x 224 input (measured 21-26, once 35 under load)
ACTIVATION_BYTES_224_TRIMMED_NO_ARENA = 10 * MB  # measured +3.4-4.5 steady, peak ~+10 in a learn run
CHECKPOINT_BYTES = 2 * MB  # measured: a 1 MB write slice and the 1 MB read-back buffer hashing it
# The bundle's text encoder while it embeds a new concept name (text_encoder.py), then released. Measured with
# the int8 MiniLM (22.8 MB file): session +45.3 MB, tokenizers +3.0, one name's 7 templates +2.2 (docs/text-encoder.md).
TEXT_ENCODER_FACTOR = 2.0  # x text_encoder.onnx
TEXT_ENCODER_FIXED = 6 * MB
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlanItem:
    name: str
    nbytes: int
    basis: str  # how the figure was obtained, shown in the table
    file_backed: bool = False  # clean pages of mapped files, not memory the process allocated (module docstring)


@dataclass(frozen=True)
class MemoryPlan:
    items: tuple[PlanItem, ...]

    @property
    def total_bytes(self) -> int:
        return sum(item.nbytes for item in self.items)

    @property
    def file_backed_bytes(self) -> int:
        return sum(item.nbytes for item in self.items if item.file_backed)

    def table(self, budget_mb: float | None = None) -> str:
        width = max(len(item.name) for item in self.items)
        lines = [f"{'item':<{width}}  {'MB':>7}  basis"]
        lines += [f"{item.name:<{width}}  {item.nbytes / MB:7.1f}  {item.basis}" for item in self.items]
        lines.append(f"{'total':<{width}}  {self.total_bytes / MB:7.1f}")
        if budget_mb is not None:
            lines.append(f"{'budget':<{width}}  {budget_mb:7.1f}  memory_budget_mb of the device profile")
        return "\n".join(lines)

    def check(self, profile: DeviceProfile,
              fix: str = "lower replay_bytes, use graph_optimization basic, or a bigger profile") -> None:
        """Raise ``BudgetExceededError`` (exit 3), with the table, when the plan exceeds the profile's budget."""
        if self.total_bytes > profile.memory_budget_mb * MB:
            raise BudgetExceededError(
                f"memory plan {self.total_bytes / MB:.1f} MB exceeds the {profile.memory_budget_mb} MB budget of "
                f"profile {profile.name}; {fix}\n" + self.table(profile.memory_budget_mb)
            )

    def plus(self, *items: PlanItem) -> MemoryPlan:
        """This plan with more items (something held for a while on top, like the text encoder)."""
        return MemoryPlan(self.items + items)

    def as_dict(self) -> dict[str, object]:
        return {
            "total_mb": round(self.total_bytes / MB, 2),
            "file_backed_mb": round(self.file_backed_bytes / MB, 2),
            "items": [{"name": i.name, "mb": round(i.nbytes / MB, 2), "basis": i.basis, "file_backed": i.file_backed}
                      for i in self.items],
        }


def plan_memory(
    profile: DeviceProfile,
    *,
    model_bytes: int,
    input_size: int,
    head_bytes: int,
    anchors_bytes: int,
    replay_bytes: int = 0,
    feature_dim: int = 1280,
    batch_size: int = 1,
    frame_size: tuple[int, int] = CAPTURE_SIZE,
    learning: bool = True,
    heap_trimmed: bool = False,
) -> MemoryPlan:
    """Estimate the process's peak RSS.

    ``head_bytes``: everything the head method holds (``HeadMethod.nbytes()``:
    weights, ConSE branch, optimizer moments, gradients).
    ``batch_size``: frames per backbone call. ``frame_size``: the decoded
    source frame (width, height), counted three times with its crop and
    float32 input (the frame in use, the one ready or being prepared:
    pipeline.py, and the source's own buffer: a camera's newest frame). ``heap_trimmed``: ``process_tuning.limit_heap_retention()`` was applied.
    """
    pixel_ratio = (input_size / 224) ** 2
    factor = SESSION_FACTOR_TRIMMED if heap_trimmed else SESSION_FACTOR[profile.graph_optimization]
    session = int(model_bytes * factor) + (SESSION_FIXED_TRIMMED if heap_trimmed else 0)
    arena = "with" if profile.ort_cpu_arena else "without"
    per_frame = ACTIVATION_BYTES_224
    if heap_trimmed and not profile.ort_cpu_arena:
        per_frame = ACTIVATION_BYTES_224_TRIMMED_NO_ARENA
    trimmed = ", heap trimmed" if heap_trimmed else ""
    width, height = frame_size
    frames = 3 * (height * width * 3 + input_size * input_size * 3 + batch_size * 3 * input_size**2 * 4)
    items = [
        PlanItem("runtime baseline", BASELINE_BYTES, "python + numpy + onnxruntime + pillow heap after start-up, "
                 "measured"),
        PlanItem("code and mapped files", FILE_BACKED_BYTES, "file-backed pages in use while learning, measured",
                 file_backed=True),
        PlanItem("backbone session", session,
                 f"{'4 MB + ' if heap_trimmed else ''}{factor}x backbone.onnx ({model_bytes / MB:.1f} MB), graph "
                 f"optimisation {profile.graph_optimization}{trimmed}"),
        PlanItem("backbone activations", int(per_frame * pixel_ratio * batch_size),
                 f"{per_frame / MB:.0f} MB/frame at 224 px; {input_size} px, batch {batch_size}, {arena} ORT arena"
                 f"{trimmed}"),
        PlanItem("frame buffers", frames, f"3 x ({width}x{height} RGB frame + crop + float32 input): in use, ready, "
                 "the source's buffer"),
        PlanItem("anchors", anchors_bytes, "the anchor file's vectors as held: float32, or int8 codes + a scale per "
                 "row and one float32 scoring block"),
        PlanItem("head", head_bytes, "weights, ConSE branch, optimizer state, gradients, replay cache"),
    ]
    if learning:
        items += [
            PlanItem("replay buffer", replay_bytes, "float16 features, replay_bytes of the profile"),
            PlanItem("update batch", (1 + profile.batch_size) * feature_dim * 4 * 4,
                     f"1 new + {profile.batch_size} replay features in float32, and temporaries"),
            PlanItem("checkpoint", CHECKPOINT_BYTES, "1 MB write slice + 1 MB hashing buffer, measured"),
        ]
    return MemoryPlan(tuple(items))


def text_encoder_item(onnx_bytes: int) -> PlanItem:
    """The bundle's text encoder while it embeds new concept names (created on demand, released after)."""
    return PlanItem("text encoder (on demand)", int(onnx_bytes * TEXT_ENCODER_FACTOR) + TEXT_ENCODER_FIXED,
                    f"{TEXT_ENCODER_FACTOR}x text_encoder.onnx ({onnx_bytes / MB:.1f} MB) + tokenizer and "
                    "activations, measured")


def plan_for_learner(
    profile: DeviceProfile,
    model_bytes: int,
    input_size: int,
    learner: Learner,
    learning: bool = True,
    frame_size: tuple[int, int] = CAPTURE_SIZE,
    heap_trimmed: bool = False,
) -> MemoryPlan:
    """``plan_memory`` filled in from a built (not yet running) ``Learner`` and the size of the bundle's backbone."""
    return plan_memory(
        profile,
        model_bytes=model_bytes,
        input_size=input_size,
        head_bytes=learner.method.nbytes(learner.replay.capacity),
        anchors_bytes=learner.anchors.resident_bytes,
        replay_bytes=learner.replay.nbytes,
        feature_dim=learner.feature_dim,
        batch_size=1,
        frame_size=frame_size,
        learning=learning,
        heap_trimmed=heap_trimmed,
    )


# ---- monitoring ----------------------------------------------------------------------------------


def current_rss_bytes() -> int | None:
    """Resident set size now, from /proc/self/statm (Linux); None where there is no /proc."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def anonymous_rss_bytes() -> int | None:
    """Resident memory the process allocated itself: resident minus shared pages (file-backed and shmem), from
    /proc/self/statm (Linux); None where there is no /proc."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            fields = fh.read().split()
        return (int(fields[1]) - int(fields[2])) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def rss_parts() -> dict[str, float] | None:
    """This process's resident memory now, in MB, split as the kernel counts it (/proc/self/status; None
    without /proc): ``anon`` (heap, arenas, stacks: only the process can free it), ``file`` (pages of mapped
    libraries and model files: the kernel can drop clean ones and map them back from the page cache),
    ``shmem``, their sum ``rss``, and ``peak`` (VmHWM, the largest ``rss`` so far)."""
    names = {"VmRSS": "rss", "RssAnon": "anon", "RssFile": "file", "RssShmem": "shmem", "VmHWM": "peak"}
    try:
        with open("/proc/self/status") as fh:
            fields = dict(line.split(":", 1) for line in fh if ":" in line)
        return {key: round(int(fields[name].split()[0]) / 1024, 1) for name, key in names.items()}
    except (OSError, KeyError, ValueError):
        return None


def peak_rss_bytes() -> int:
    """Peak RSS of this process so far (getrusage: kB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


class RssMonitor:
    """Samples RSS every ``every`` ticks; calls ``on_over_budget(rss, budget)`` when it is above budget.

    ``file_backed_bytes``: judge the anonymous RSS plus this fixed allowance
    for file-backed pages (the plan's), not the whole RSS, whose file-backed
    part depends on the machine's page cache (module docstring); the figure
    passed to ``on_over_budget`` and returned by ``tick`` is then that sum.
    """

    def __init__(self, budget_bytes: int, on_over_budget: Callable[[int, int], None], every: int = 50,
                 file_backed_bytes: int | None = None) -> None:
        self.budget_bytes = budget_bytes
        self.file_backed_bytes = file_backed_bytes
        self.on_over_budget = on_over_budget
        self.every = max(1, every)
        self.peak_bytes = 0
        self.over_budget_events = 0
        self._ticks = 0
        self.available = self._read() is not None
        if not self.available:
            log.warning("cannot read the process's memory use on this OS (no /proc/self/statm); the replay buffer "
                        "will not shrink under memory pressure")

    def tick(self) -> int | None:
        """Call once per frame; returns the RSS when this tick sampled it."""
        self._ticks += 1
        if not self.available or self._ticks % self.every:
            return None
        return self.sample()

    def _read(self) -> int | None:
        if self.file_backed_bytes is None:
            return current_rss_bytes()
        anonymous = anonymous_rss_bytes()
        return None if anonymous is None else anonymous + self.file_backed_bytes

    def sample(self) -> int | None:
        rss = self._read()
        if rss is None:
            return None
        self.peak_bytes = max(self.peak_bytes, rss)
        if rss > self.budget_bytes:
            self.over_budget_events += 1
            self.on_over_budget(rss, self.budget_bytes)
        return rss


def replay_shrinker(replay: ReplayBuffer) -> Callable[[int, int], None]:
    """An ``on_over_budget`` callback that gives the excess back by shrinking the replay buffer."""

    def shrink(rss: int, budget: int) -> None:
        before = replay.nbytes
        if before == 0:
            log.warning("process uses %.1f MB, over its %.1f MB budget, and the replay buffer is already empty",
                        rss / MB, budget / MB)
            return
        give_back = -(-(rss - budget) // replay.bytes_per_sample)  # whole samples, rounded up
        replay.shrink(max(0, replay.capacity - give_back) * replay.feature_dim * BYTES_PER_VALUE)
        log.warning("process uses %.1f MB, over its %.1f MB budget: replay buffer shrunk from %.1f to %.1f MB "
                    "(%d features)", rss / MB, budget / MB, before / MB, replay.nbytes / MB, replay.capacity)

    return shrink
