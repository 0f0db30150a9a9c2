"""Static int8 quantization of the exported backbone with ONNX Runtime's quantizer (``export --quantize int8``).

Offline only. The fp32 graph is pre-processed (shape inference + graph
optimisation, ``quant_pre_process``), calibrated on real images from a folder
(activation ranges by MinMax), and rewritten in QDQ format with per-channel
int8 weights and uint8 activations. Every fourth image of the folder is held
out of calibration and used to report how far int8 features drift from fp32
(cosine per image); an export whose mean agreement falls below the recipe's
floor fails instead of shipping a backbone that would mislead the head.

Choices, measured on Lite0 at 224 px (32 Tiny-ImageNet calibration images,
200 held-out val images; fp32 13.6 MB):

    per-channel, MinMax, u8 activations   3.9 MB  cosine mean 0.988, min 0.961
    per-channel, MinMax, s8 activations   3.9 MB  cosine mean 0.988, min 0.961
    per-channel, Percentile, u8           3.9 MB  cosine mean 0.989, min 0.953  (2.5x slower to calibrate)
    per-channel, MinMax, u8, reduce_range 3.9 MB  cosine mean 0.955, min 0.844
    per-tensor,  MinMax, u8               3.6 MB  cosine mean 0.719, min 0.273

Per-tensor weights wreck the depthwise convolutions (their channels' ranges
differ by orders of magnitude), hence per-channel. 128 calibration images
instead of 32 did not help (0.988).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecvm.device.image_files import FileReader, decode_image, folder_items
from edgecvm.device.int8_kernels import ask_exact_int8
from edgecvm.device.preprocess import Preprocessor
from edgecvm.errors import BadInputError
from edgecvm.reporting import ProgressBar, ProgressFactory, no_log, silent

HELDOUT_EVERY = 4  # image i is held out when i % 4 == 3
MIN_HELDOUT = 2
# MinMax calibration keeps every activation of the images it has seen until it computes ranges. With
# CalibStridedMinMax it folds each run of this many images into running min/max, bounding its memory
# (ORT 1.32's CalibMaxIntermediateOutputs instead drops the collected data unused).
CALIBRATION_STRIDE = 8
MIN_CALIBRATION = CALIBRATION_STRIDE


@dataclass(frozen=True)
class QuantReport:
    fp32_bytes: int
    int8_bytes: int
    calibration_images: int
    heldout_images: int
    cosine_mean: float  # fp32 vs int8 features on the held-out images
    cosine_min: float


@dataclass(frozen=True)
class CalibrationSplit:
    calibration: tuple[str, ...]
    heldout: tuple[str, ...]


def split_calibration_folder(folder: Path, max_images: int) -> CalibrationSplit:
    """Images below ``folder`` (sorted, at most ``max_images`` evenly spaced), every fourth one held out."""
    if not folder.is_dir():
        raise BadInputError(f"{folder}: calibration folder not found; pass --calibration DIR with a few dozen "
                            "images like the ones the device will see")
    origins = [item.origin for item in folder_items(folder)]
    if len(origins) > max_images:
        origins = [origins[i] for i in np.linspace(0, len(origins) - 1, max_images).round().astype(int)]
    heldout = tuple(o for i, o in enumerate(origins) if i % HELDOUT_EVERY == HELDOUT_EVERY - 1)
    calibration = tuple(o for i, o in enumerate(origins) if i % HELDOUT_EVERY != HELDOUT_EVERY - 1)
    calibration = calibration[: len(calibration) // CALIBRATION_STRIDE * CALIBRATION_STRIDE]  # whole strides only
    if len(calibration) < MIN_CALIBRATION or len(heldout) < MIN_HELDOUT:
        raise BadInputError(f"{folder}: {len(origins)} images; int8 needs {MIN_CALIBRATION} to calibrate on plus "
                            f"{MIN_HELDOUT} held out (every {HELDOUT_EVERY}th image) to measure the agreement with fp32")
    return CalibrationSplit(calibration, heldout)


def load_inputs(origins: tuple[str, ...], preprocess: Preprocessor) -> Iterator[np.ndarray]:
    """One preprocessed (1, 3, S, S) batch per image; an undecodable image is an error naming it."""
    reader = FileReader()
    try:
        for origin in origins:
            image, reason = decode_image(reader.read(origin))
            if image is None:
                raise BadInputError(f"{origin}: {reason}; remove it from the calibration folder")
            yield preprocess.batch([image])
    finally:
        reader.close()


class _Reader:
    """The quantizer's CalibrationDataReader protocol with ranges (for CalibStridedMinMax) and a progress bar."""

    def __init__(self, origins: tuple[str, ...], preprocess: Preprocessor, input_name: str, bar: ProgressBar) -> None:
        self.origins, self.preprocess, self.input_name, self.bar = origins, preprocess, input_name, bar
        self.inputs: Iterator[np.ndarray] = iter(())

    def __len__(self) -> int:
        return len(self.origins)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.inputs = load_inputs(self.origins[start_index:end_index], self.preprocess)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.inputs, None)
        if batch is None:
            return None
        self.bar.update()
        return {self.input_name: batch}


def _features(session, inputs: Iterator[np.ndarray]) -> np.ndarray:
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x})[0] for x in inputs])


def feature_agreement(fp32_path: Path, int8_path: Path, origins: tuple[str, ...],
                      preprocess: Preprocessor) -> np.ndarray:
    """Cosine similarity between fp32 and int8 features, one per image."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    ask_exact_int8(options)  # the sums a device's session computes (device/int8_kernels.py)
    sessions = [ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]) for p in (fp32_path, int8_path)]
    ref, got = (_features(s, load_inputs(origins, preprocess)) for s in sessions)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1)
    return (ref * got).sum(axis=1) / np.maximum(norms, 1e-12)


def quantize_backbone(fp32_path: Path, out_path: Path, split: CalibrationSplit, preprocess: Preprocessor,
                      min_cosine: float, log: Callable[[str], None] = no_log,
                      progress: ProgressFactory = silent) -> QuantReport:
    """Write the int8 QDQ model to ``out_path``; fails when held-out agreement is below ``min_cosine``.

    ``log`` receives a line before and after (what is calibrated, how well int8 agrees); ``progress`` a bar over
    the calibration images. Both are silent by default: the caller decides what reaches the terminal."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    log(f"int8: calibrating on {len(split.calibration)} images, {len(split.heldout)} held out")
    work = Path(tempfile.mkdtemp(prefix="quantize.", dir=out_path.parent))
    try:
        prepared = work / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared))
        input_name = onnx.load(str(prepared)).graph.input[0].name
        with progress(len(split.calibration), "calibrate", "img") as bar:
            reader = _Reader(split.calibration, preprocess, input_name, bar)
            quantize_static(str(prepared), str(out_path), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax,
                            extra_options={"CalibStridedMinMax": CALIBRATION_STRIDE})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cosine = feature_agreement(fp32_path, out_path, split.heldout, preprocess)
    report = QuantReport(fp32_bytes=fp32_path.stat().st_size, int8_bytes=out_path.stat().st_size,
                         calibration_images=len(split.calibration), heldout_images=len(split.heldout),
                         cosine_mean=float(cosine.mean()), cosine_min=float(cosine.min()))
    log(f"int8: {report.fp32_bytes / 1e6:.1f} MB -> {report.int8_bytes / 1e6:.1f} MB; feature cosine vs fp32 on "
        f"{report.heldout_images} held-out images: mean {report.cosine_mean:.4f}, min {report.cosine_min:.4f}")
    if not report.cosine_mean >= min_cosine:
        raise BadInputError(f"int8 features agree with fp32 at mean cosine {report.cosine_mean:.4f} < {min_cosine} "
                            "on held-out calibration images; calibrate on more images like the ones the device's "
                            "camera sees, or export fp32")
    return report
