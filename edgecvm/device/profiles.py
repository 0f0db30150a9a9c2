"""Device profiles: what a target device can spend (threads, memory, precision).

One YAML per device in ``edgecvm/resources/profiles/``; loaded into ``DeviceProfile``,
validated (unknown keys rejected with a hint, numbers range-checked). The
learner reads its thread count, execution providers, replay size, batch and
checkpoint interval from here, and refuses to start when its memory plan does
not fit ``memory_budget_mb``.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml

from edgecvm import resources
from edgecvm.errors import BadInputError
from edgecvm.formats.schema import from_dict
from edgecvm.learning.head_methods import DEFAULT_METHOD, HEAD_METHODS
from edgecvm.learning.learner import LearnerConfig
from edgecvm.learning.open_set import DEFAULT_TARGET_TPR

PROFILE_DIR = resources.profiles_dir()

Precision = Literal["fp32", "int8", "fp16"]
GraphOpt = Literal["disable", "basic", "extended", "all"]
# Providers a profile may name. A name outside this list is a typo (ORT would just skip it, silently
# running on the CPU), so it is refused at load; a listed one this onnxruntime build lacks is
# skipped with a warning at run time (runtime.select_providers).
KNOWN_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "ROCMExecutionProvider",
                   "OpenVINOExecutionProvider", "CoreMLExecutionProvider", "NnapiExecutionProvider",
                   "XnnpackExecutionProvider", "ACLExecutionProvider", "ArmNNExecutionProvider",
                   "QNNExecutionProvider", "DmlExecutionProvider", "CPUExecutionProvider")
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "ROCMExecutionProvider", "DmlExecutionProvider")


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    description: str
    cpu_cores: int
    threads: int  # intra-op threads for ONNX Runtime and numpy work
    ram_mb: int
    memory_budget_mb: int  # for the whole learner process (RSS)
    execution_providers: tuple[str, ...]  # tried in order; CPUExecutionProvider is always the fallback
    resolution: int  # backbone input size (px); must match a bundle exported at that size
    precision: Precision  # of the backbone bundle: fp32, int8 (export --quantize int8), fp16 (GPU providers only)
    replay_bytes: int  # latent replay buffer (float16 features)
    batch_size: int  # replay minibatch per update
    checkpoint_every: int  # updates between state checkpoints
    target_latency_ms: float  # per predicted frame, for the bench verdict
    compute_gflops: float  # sustained backbone throughput; only for labelled estimates
    graph_optimization: GraphOpt = "all"
    ort_cpu_arena: bool = False  # pooled activations: ~2x faster backbone for +5-9 MB at 224 px (docs/benchmarks.md)
    # how the head learns when neither --head-method nor a saved state says (head_methods.py); a profile too small
    # for the default's statistics names a lighter one
    head_method: str = DEFAULT_METHOD
    # open set: the share of frames of taught concepts answered as taught, the rest "unknown" (learning/open_set.py)
    unknown_tpr: float = DEFAULT_TARGET_TPR

    def __post_init__(self) -> None:
        positive = ("cpu_cores", "threads", "ram_mb", "memory_budget_mb", "resolution", "batch_size",
                    "checkpoint_every", "target_latency_ms", "compute_gflops")
        for name in positive:
            if getattr(self, name) <= 0:
                raise BadInputError(f"profile {self.name}: {name} must be > 0, got {getattr(self, name)}")
        if self.replay_bytes < 0:
            raise BadInputError(f"profile {self.name}: replay_bytes must be >= 0, got {self.replay_bytes}")
        if self.memory_budget_mb > self.ram_mb:
            raise BadInputError(
                f"profile {self.name}: memory_budget_mb ({self.memory_budget_mb}) exceeds ram_mb ({self.ram_mb})"
            )
        if self.threads > self.cpu_cores:
            raise BadInputError(f"profile {self.name}: threads ({self.threads}) exceeds cpu_cores ({self.cpu_cores}); "
                                "more threads than cores only makes ONNX Runtime's workers wait for each other")
        if not self.execution_providers:
            raise BadInputError(f"profile {self.name}: execution_providers must list at least one provider")
        for provider in self.execution_providers:
            if provider not in KNOWN_PROVIDERS:
                by_lower = {known.lower(): known for known in KNOWN_PROVIDERS}  # "Cuda..." is a case typo
                close = difflib.get_close_matches(provider.lower(), list(by_lower), n=1)
                hint = f"did you mean {by_lower[close[0]]!r}?" if close else f"known: {', '.join(KNOWN_PROVIDERS)}"
                raise BadInputError(f"profile {self.name}: unknown execution provider {provider!r}; {hint}")
        if self.head_method not in HEAD_METHODS:
            close = difflib.get_close_matches(self.head_method, list(HEAD_METHODS), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"available: {', '.join(HEAD_METHODS)}"
            raise BadInputError(f"profile {self.name}: unknown head_method {self.head_method!r}; {hint}")
        if not 0.0 < self.unknown_tpr < 1.0:
            raise BadInputError(f"profile {self.name}: unknown_tpr must be between 0 and 1 (exclusive), "
                                f"got {self.unknown_tpr}")
        if self.precision == "fp16" and not set(self.execution_providers) & set(GPU_PROVIDERS):
            raise BadInputError(f"profile {self.name}: precision fp16 needs a GPU provider ({', '.join(GPU_PROVIDERS)}); "
                                "on a CPU use fp32 or int8")


def available_profiles(folder: Path = PROFILE_DIR) -> list[str]:
    """Names of the shipped profiles (file stems), sorted; an install without them is an error, not an empty list."""
    names = sorted(p.stem for p in folder.glob("*.yaml"))
    if not names:
        raise BadInputError(f"no device profiles in {folder}: this edgecvm installation is incomplete; reinstall it "
                            "(a YAML profile can still be given by path)")
    return names


def load_profile_file(path: Path) -> DeviceProfile:
    """Load one profile YAML; the profile's name is the file name."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise BadInputError(f"{path}: cannot read profile ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise BadInputError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from None
    if isinstance(data, dict) and "name" in data:
        raise BadInputError(f"{path}: 'name' is not a field; the profile is named after its file")
    if isinstance(data, dict):
        data = {"name": path.stem, **data}
    return from_dict(DeviceProfile, data, str(path))


def load_profile(name_or_path: str, folder: Path = PROFILE_DIR) -> DeviceProfile:
    """Resolve ``jetson-nano`` (a shipped profile) or a path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return load_profile_file(path)
    candidate = folder / f"{name_or_path}.yaml"
    if candidate.is_file():
        return load_profile_file(candidate)
    names = available_profiles(folder)
    close = difflib.get_close_matches(name_or_path, names, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise BadInputError(f"unknown device profile {name_or_path!r}; {hint}available: {', '.join(names)}")


def profile_as_dict(profile: DeviceProfile) -> dict[str, object]:
    """Every field, JSON/YAML-ready (lists, not tuples); ``name`` included."""
    data = dataclasses.asdict(profile)
    data["execution_providers"] = list(profile.execution_providers)
    return data


def learner_config(profile: DeviceProfile, method: str | None = None, seed: int = 0, unknown: bool = True,
                   unknown_tpr: float | None = None) -> LearnerConfig:
    """What the learner takes from a profile: its replay size, batch, default head method and open-set target
    (``unknown_tpr`` overrides the profile's; ``unknown=False``: always a taught concept)."""
    tpr = (profile.unknown_tpr if unknown_tpr is None else unknown_tpr) if unknown else None
    return LearnerConfig(method=method, default_method=profile.head_method, replay_bytes=profile.replay_bytes,
                         batch_size=profile.batch_size, seed=seed, unknown_tpr=tpr)
