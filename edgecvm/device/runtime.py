"""The frozen backbone on the device: one ONNX Runtime session configured by the device profile.

The session is built once from a verified bundle. Providers are tried in the
profile's order; one that this onnxruntime build lacks (TensorRT on a Pi) is
dropped with a warning naming it, and the CPU provider is always last.

Why the session is set up this way (figures in docs/benchmarks.md):

- Memory. glibc keeps freed blocks by default, so the weight copies ORT makes
  while optimising the graph would stay resident; heap retention must be
  limited before the process frees any large block, which is why
  ``device.open_device`` does it first. The bundle's weights are ONNX external
  data, so ORT never holds the parsed proto beside the tensors.
- The CPU arena (``ort_cpu_arena``) pools activations: the backbone runs about
  twice as fast, for several MB more RSS. Profiles with memory to spare turn it
  on; a 100 MB budget cannot afford it.
- The memory pattern is on with or without the arena: ORT plans one block for
  all of a run's activations instead of allocating each tensor. Without the
  arena that block is still mapped and zeroed afresh on every run, but it is
  the run's peak, not every tensor's bytes one after another: measured on
  Lite0-224 fp32 with the heap trimmed, 1,730 instead of 4,720 page faults a
  run, 0.0157 instead of 0.0225 CPU s and 110-115 instead of 76-80 frames/s,
  bit-identical features, for 1.6 MB more at ``learn``'s peak
  (docs/benchmarks.md).
- Not used: disabling MLAS weight pre-packing (saves memory only on an
  untrimmed heap) and pre-optimised ORT-format files (only a CPU-specific file
  keeps the fast NCHWc kernels; the portable one runs the backbone 2x slower).
- Spinning. ORT's pool threads spin-wait for work by default, inside a run
  (between its operators) and after it returns: the fastest mode for runs
  back to back with nothing else to do (extracting an evaluation's
  features). On the device other threads need those cores: the pipeline's
  worker decodes and preprocesses the next camera-sized frame while the
  backbone runs, and ``learn``'s update thread trains the head. With the
  profile's threads as many as the cores, a spinning thread takes the core
  the worker needs and the worker delays it in turn; measured on 2 cores with
  640 x 480 frames (docs/benchmarks.md), spinning off altogether (threads
  sleep between operators) cut CPU per frame by 6 % in ``predict`` and 12 %
  in ``learn``, ``learn`` ran 8 % more frames/s and ``predict`` as many.
  ``device.open_device`` sets ``spinning=False``.
- int8 sums. On x86 CPUs without VNNI, ONNX Runtime's fast int8 kernels
  clamp sums of products to 16 bits; an int8 bundle's session asks for exact
  ones there (``int8_kernels``).
- Threads. numpy's BLAS pool and ORT's pool, each as wide as the cores,
  thrash when the head's matmuls run between backbone calls (100x slower on 2
  cores), so the device process runs BLAS on one thread and gives the
  profile's threads to ORT.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import onnxruntime as ort
from PIL import Image

from edgecvm.device.int8_kernels import ask_exact_int8
from edgecvm.device.preprocess import Preprocessor
from edgecvm.device.profiles import DeviceProfile
from edgecvm.errors import BadInputError, IntegrityError
from edgecvm.formats.bundle import Bundle

log = logging.getLogger("edgecvm.device.runtime")
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
            log.warning("execution provider %s is not available in this onnxruntime build (it has: %s); "
                        "falling back to the next one", name, ", ".join(sorted(available)))
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


def session_options(profile: DeviceProfile, spinning: bool = True) -> ort.SessionOptions:
    """ORT options for a profile: threads, graph optimisation, the CPU arena, and whether pool threads spin-wait
    for work (``spinning``: off when other threads need the cores; module docstring)."""
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.intra_op_num_threads = profile.threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = _GRAPH_OPT[profile.graph_optimization]
    options.enable_cpu_mem_arena = profile.ort_cpu_arena
    options.enable_mem_pattern = True  # with or without the arena (module docstring)
    options.log_severity_level = 3
    return ask_exact_int8(options)


def make_session(bundle: Bundle, profile: DeviceProfile, spinning: bool = True) -> ort.InferenceSession:
    """The one backbone session, after checking the profile runs at the bundle's input size."""
    if profile.resolution != bundle.manifest.input_size:
        raise BadInputError(f"profile {profile.name} runs at {profile.resolution} px but {bundle.folder} was exported at "
                            f"{bundle.manifest.input_size} px; export with a matching recipe (lite0-"
                            f"{profile.resolution}) or pick another profile")
    try:
        session = ort.InferenceSession(str(bundle.backbone_path), sess_options=session_options(profile, spinning),
                                       providers=select_providers(profile.execution_providers))
    except Exception as exc:  # onnxruntime raises its own exception types for bad models
        raise BadInputError(f"{bundle.backbone_path}: onnxruntime cannot load it ({exc}); re-export the bundle") from None
    _check_signature(bundle, session)
    return session


def _check_signature(bundle: Bundle, session: ort.InferenceSession) -> None:
    """The graph must take (N, 3, S, S) float32 and give (N, feature_dim), as the manifest says."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    size, dim = bundle.manifest.input_size, bundle.manifest.feature_dim
    ok = (len(inputs) == 1 and inputs[0].type == "tensor(float)" and list(inputs[0].shape[1:]) == [3, size, size]
          and len(outputs) >= 1 and list(outputs[0].shape[1:]) == [dim])
    if not ok:
        found = f"{[(i.shape, i.type) for i in inputs]} -> {[o.shape for o in outputs]}"
        raise IntegrityError(f"{bundle.backbone_path}: graph signature {found} does not match the manifest "
                             f"((N, 3, {size}, {size}) float32 -> (N, {dim})); re-export the bundle")


class FeatureExtractor:
    """Images → pooled backbone features, preprocessed exactly as at export time."""

    def __init__(self, bundle: Bundle, profile: DeviceProfile, spinning: bool = True) -> None:
        self.bundle = bundle
        self.preprocess = Preprocessor.from_manifest(bundle.manifest)
        self.session = make_session(bundle, profile, spinning)
        self.input_name = self.session.get_inputs()[0].name
        self.feature_dim = bundle.manifest.feature_dim

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Backbone only, on an already preprocessed (N, 3, S, S) float32 batch."""
        return self.session.run(None, {self.input_name: batch})[0]

    def warm_up(self) -> None:
        """One inference on a blank frame, so ORT allocates its buffers and loads its kernels before the stream starts."""
        size = self.bundle.manifest.input_size
        self.run(np.zeros((1, 3, size, size), dtype=np.float32))

    def extract(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(n, feature_dim) float32 features for n images of any size and mode."""
        if not images:
            return np.zeros((0, self.feature_dim), dtype=np.float32)
        return self.run(self.preprocess.batch(images))
