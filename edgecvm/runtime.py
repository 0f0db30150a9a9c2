"""The frozen backbone on the device: one ONNX Runtime session configured by the device profile.

The session is built once from a verified bundle. Providers are tried in the
profile's order; one that this onnxruntime build lacks (TensorRT on a Pi) is
dropped with a warning naming it, and the CPU provider is always last. The
CPU memory arena and memory patterns are off unless the profile asks: on a
512 MB board, tens of MB of arena matter more than a few percent of speed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import onnxruntime as ort
from PIL import Image

from edgecvm.bundle import Bundle
from edgecvm.errors import BadInputError
from edgecvm.preprocess import Preprocessor
from edgecvm.profiles import DeviceProfile

log = logging.getLogger("edgecvm.runtime")
_GRAPH_OPT = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def select_providers(wanted: Sequence[str]) -> list[str]:
    """The profile's providers that this onnxruntime has, in order, CPU last."""
    available = set(ort.get_available_providers())
    chosen = []
    for name in wanted:
        if name in available:
            chosen.append(name)
        else:
            log.warning("execution provider %s is not available in this onnxruntime build; falling back", name)
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


def make_session(bundle: Bundle, profile: DeviceProfile) -> ort.InferenceSession:
    if profile.resolution != bundle.manifest.input_size:
        raise BadInputError(f"profile {profile.name} runs at {profile.resolution} px but {bundle.folder} was exported at "
                            f"{bundle.manifest.input_size} px; export with a matching recipe (export/lite0-"
                            f"{profile.resolution}.yaml) or pick another profile")
    options = ort.SessionOptions()
    options.intra_op_num_threads = profile.threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = _GRAPH_OPT[profile.graph_optimization]
    options.enable_cpu_mem_arena = profile.ort_cpu_arena
    options.enable_mem_pattern = profile.ort_cpu_arena
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(bundle.backbone_path), sess_options=options,
                                    providers=select_providers(profile.execution_providers))
    except Exception as exc:  # onnxruntime raises its own exception types for bad models
        raise BadInputError(f"{bundle.backbone_path}: onnxruntime cannot load it ({exc}); re-export the bundle") from None


class FeatureExtractor:
    """Images → pooled backbone features, exactly as at export time."""

    def __init__(self, bundle: Bundle, profile: DeviceProfile) -> None:
        self.bundle = bundle
        self.preprocess = Preprocessor.from_manifest(bundle.manifest)
        self.session = make_session(bundle, profile)
        self.input_name = self.session.get_inputs()[0].name

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Backbone only, on an already preprocessed (N, 3, S, S) batch."""
        return self.session.run(None, {self.input_name: batch})[0]

    def extract(self, images: list[Image.Image]) -> np.ndarray:
        return self.run(self.preprocess.batch(images))
