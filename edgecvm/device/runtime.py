"""The frozen backbone on the device: one ONNX Runtime session configured by the device profile.

The session is built once from a verified bundle. Providers are tried in the
profile's order; one that this onnxruntime build lacks (TensorRT on a Pi) is
dropped with a warning naming it, and the CPU provider is always last.

Memory (host, Lite0 224 px, batch 1, 2 threads; RSS of a process holding
only numpy + ORT after 40 frames, and median frame time; measured while
writing this module):

- glibc keeps freed blocks by default, so the weight copies ORT makes while
  optimising the graph stay resident. ``make_session`` first calls
  ``process_memory.limit_heap_retention()``: -20 MB at no cost in speed. (It
  must run before the process frees any large block: ``device.open_device``
  calls it first thing.)
- The CPU arena (``ort_cpu_arena`` in the profile) then decides the rest:
  on, activations are pooled: ~105 MB, 13-23 ms/frame; off, every frame maps
  and frees fresh buffers: ~84 MB, 65-105 ms/frame. (Off *without* heap
  trimming is the worst of both: 103-112 MB and 29-45 ms.) Re-measured
  after the memory work below (external data, page release), as ``learn``'s
  peak over 200 frames: arena on 95.8 MB and 4.5 ms per backbone run, off
  91.1 MB and 8.2-9.2 ms (with the replay buffer full: 108.9 against ~100
  MB); profiles with a budget to spare turn it on.
- The bundle's weights are ONNX external data (``backbone.weights``, see
  ``export.split_weights``): ORT then never holds the parsed proto with
  every weight next to the tensors and their re-laid-out copies; session
  creation peaks 13 MB lower (75.0 vs 87.9 MB), same speed.
- Disabling MLAS weight pre-packing saved 18 MB only on an untrimmed heap,
  and a pre-optimised ONNX file (``optimized_model_filepath``) did not lower
  the peak (the first inference's activations dominate): neither is used.
- A pre-optimised ORT-format file loaded memory-mapped
  (``session.use_memory_mapped_ort_model`` +
  ``session.use_ort_model_bytes_for_initializers``: no graph optimisation at
  load, initializers point into the file mapping) cuts session creation from
  +39 MB transient / +23 MB resident to +19 / +19 (measured later, in a
  process of 68 MB). But ``learn``'s peak then comes from learning (frame +
  checkpoint transients on ~122 MB): 133.5 -> 130.5 MB. Only a file saved at
  level "all" keeps the NCHWc speed, and ORT marks such a file specific to
  the CPU that saved it (block size 8 on AVX2, 16 on AVX-512 and ARM NEON);
  the portable "extended" file runs the backbone 2x slower here (48 vs 24
  ms). Loading an ``.ort`` from bytes with ``session.use_ort_model_bytes_directly``
  segfaults from Python (the binding copies the bytes into a temporary).
  Not used: external data gets most of the saving portably.

Spinning: by default ORT's pool threads spin-wait for work instead of
sleeping, both between the operators of a run and after a run returns. Where
ORT is the only work (``predict``) that is its fastest mode: the backbone
alone ran 231 against 190 frames/s with spinning off (host, arena off, 2
threads, six alternating rounds). In ``learn`` the head's update thread
needs the cores those threads spin on between runs: host, 200 frames, head
``sgd``: learn 50 frames/s with spinning, 63 without, ``predict`` 66 and 65
(arena off). Turning spinning off also puts the pool thread to sleep between
the ~100 operators of each run, though, and ORT has a setting for exactly
this case, ``session.force_spinning_stop``: spin inside a run, stop as soon
as it returns. Measured against spinning off (host, 200 frames, six
alternating rounds each): learn with ``sgd`` 62.4 -> 67.2 frames/s, with
``lda`` 64.4 -> 68.4. So ``predict`` spins between runs too and ``learn``
does not (``spin_between_runs``, set by ``device.open_device``).

Threads: the head's numpy work runs between backbone calls. With numpy's
OpenBLAS and ORT each running a pool as wide as the cores, the two pools
thrash: the head's (33 x 1280) @ (1280 x 1000) matmuls took 240 ms per frame
interleaved with ORT runs versus 2 ms alone (2 cores). The device process
therefore runs BLAS on one thread (5-8 ms) and gives the profile's threads to ORT.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import onnxruntime as ort
from PIL import Image

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


def session_options(profile: DeviceProfile, spin_between_runs: bool = True) -> ort.SessionOptions:
    """ORT options for a profile: threads, graph optimisation, the CPU arena, and whether pool threads keep
    spinning after a run (``spin_between_runs``: off when another thread needs the cores then; module docstring)."""
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "1")
    options.add_session_config_entry("session.force_spinning_stop", "0" if spin_between_runs else "1")
    options.intra_op_num_threads = profile.threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = _GRAPH_OPT[profile.graph_optimization]
    options.enable_cpu_mem_arena = profile.ort_cpu_arena
    options.enable_mem_pattern = profile.ort_cpu_arena
    options.log_severity_level = 3
    return options


def make_session(bundle: Bundle, profile: DeviceProfile, spin_between_runs: bool = True) -> ort.InferenceSession:
    """The one backbone session, after checking the profile runs at the bundle's input size."""
    if profile.resolution != bundle.manifest.input_size:
        raise BadInputError(f"profile {profile.name} runs at {profile.resolution} px but {bundle.folder} was exported at "
                            f"{bundle.manifest.input_size} px; export with a matching recipe (lite0-"
                            f"{profile.resolution}) or pick another profile")
    try:
        session = ort.InferenceSession(str(bundle.backbone_path), sess_options=session_options(profile, spin_between_runs),
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

    def __init__(self, bundle: Bundle, profile: DeviceProfile, spin_between_runs: bool = True) -> None:
        self.bundle = bundle
        self.preprocess = Preprocessor.from_manifest(bundle.manifest)
        self.session = make_session(bundle, profile, spin_between_runs)
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
