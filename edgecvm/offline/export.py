"""Offline export: EfficientNet-Lite0 (torch) → a verified bundle folder the device loads.

Steps, each checked: build the torch model from the packaged ImageNet weights;
export its pooled-feature graph to ONNX (dynamic batch); compare ONNX Runtime
with torch on random inputs (the export fails above the recipe's tolerance);
optionally quantize it to int8 (see edgecvm.offline.quantize); write the initial head
(random, or ConSE zero-shot); copy the anchor file in; write the manifest with
every file's sha256. Everything happens in a temp folder renamed into place at
the end, so a failed export never leaves half a bundle where the device would
look for one. The bundle format is documented in export/README.md.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import yaml

from edgecvm import __version__, resources
from edgecvm.device.preprocess import Preprocessor
from edgecvm.errors import BadInputError
from edgecvm.formats.anchors import AnchorSet, load_anchors
from edgecvm.formats.bundle import (
    BACKBONE,
    BACKBONE_WEIGHTS,
    BUNDLE_FORMAT,
    BUNDLE_VERSION,
    HEAD,
    MANIFEST,
    TEXT_ENCODER_FILES,
    Manifest,
    load_bundle,
    write_manifest,
)
from edgecvm.formats.head_file import HeadParams, save_head
from edgecvm.formats.integrity import sha256_file
from edgecvm.formats.schema import from_dict
from edgecvm.reporting import ProgressFactory, no_log, silent

IMAGENET_ANCHORS = resources.anchors_file("imagenet-1k.anchors.npz")
INPUT_NAME, OUTPUT_NAME = "image", "features"
HEAD_INITS = ("random", "conse")
QUANTIZE = ("int8",)
MIN_OPSET = 18  # torch's ONNX exporter (torch.export based) implements opset 18 and newer
CONSE_TOP_T = 10  # classes mixed per image; Norouzi et al. 2014 found T = 10 best on ImageNet


@dataclass(frozen=True)
class Recipe:
    """One export configuration (export/*.yaml); unknown keys are refused."""

    backbone: str
    input_size: int  # square network input, pixels
    resize: int  # shorter side before the centre crop (input_size / 0.875 as in Lite's training)
    interpolation: str = "bilinear"
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)  # Lite's TF weights expect [-1, 1]; see edgecvm.device.preprocess
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    opset: int = MIN_OPSET
    parity_tolerance: float = 1e-4  # max |ORT - torch| over the features of random inputs
    parity_samples: int = 4
    calibration_max_images: int = 256  # int8: at most this many images of --calibration are read
    int8_min_cosine: float = 0.95  # int8: mean fp32/int8 feature cosine on held-out images (measured 0.988)

    def preprocessor(self) -> Preprocessor:
        return Preprocessor(self.input_size, self.resize, self.interpolation, self.mean, self.std)


def load_recipe(name_or_path: str | Path) -> Recipe:
    """A shipped recipe by name (``lite0-224``) or a recipe YAML by path."""
    path = resources.shipped_or_path("recipes", name_or_path, ".yaml")
    try:
        data = yaml.safe_load(path.read_text())
    except (FileNotFoundError, IsADirectoryError):
        shipped = ", ".join(resources.shipped_names("recipes", ".yaml"))
        raise BadInputError(f"{path}: recipe not found; shipped recipes: {shipped} (or give a YAML path)") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from None
    recipe = from_dict(Recipe, data, str(path))
    if recipe.backbone != "efficientnet-lite0":
        raise BadInputError(f"{path}: unknown backbone {recipe.backbone!r}; available: efficientnet-lite0")
    if recipe.resize < recipe.input_size or recipe.input_size < 32:
        raise BadInputError(f"{path}: need 32 <= input_size <= resize (got {recipe.input_size}, {recipe.resize})")
    if recipe.interpolation not in ("bilinear", "bicubic") or len(recipe.mean) != 3 or len(recipe.std) != 3:
        raise BadInputError(f"{path}: interpolation must be bilinear|bicubic and mean/std three numbers each")
    if min(recipe.std) <= 0 or recipe.opset < MIN_OPSET or recipe.parity_samples < 1:
        raise BadInputError(f"{path}: need std > 0, opset >= {MIN_OPSET} and parity_samples >= 1")
    return recipe


@contextlib.contextmanager
def _exporter_quiet() -> Iterator[None]:
    """torch.onnx logs skipped torchvision ops and deprecation notes that say nothing about this model."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def export_onnx(model, recipe: Recipe, out: Path) -> None:
    """Pooled-feature graph, NCHW float32 input at the recipe size, dynamic batch, one self-contained file
    (parity check and quantization read it; ``split_weights`` moves the weights out last).

    The torch.export-based exporter (torch's default) folds the TF-"same"
    paddings and BatchNorms into a ~90-node graph; the legacy tracer left
    ~1,100 nodes of shape arithmetic and ran 1.5x slower in ONNX Runtime.
    """
    import torch

    class Features(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net.forward_features(x)

    dummy = torch.zeros(2, 3, recipe.input_size, recipe.input_size)
    with torch.no_grad(), _exporter_quiet():
        torch.onnx.export(Features().eval(), (dummy,), str(out), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_shapes=({0: torch.export.Dim("batch")},), opset_version=recipe.opset,
                          dynamo=True, external_data=False, verbose=False)


def split_weights(model_path: Path) -> None:
    """Move the weights of the ONNX file at ``model_path`` into ``backbone.weights`` beside it (ONNX external data).

    Why: from a self-contained file ONNX Runtime holds the parsed proto with
    every weight, the weights copied into tensors and their re-laid-out
    (NCHWc) forms at once while it builds the session. With external data
    the proto is only the graph and each weight is read straight from the
    file. Measured for Lite0-224 fp32 (2 threads, heap trimmed): peak RSS
    while creating the session 75.0 instead of 87.9 MB; the same resident
    size afterwards and the same speed.
    """
    import onnx

    model = onnx.load(str(model_path))
    (model_path.parent / BACKBONE_WEIGHTS).unlink(missing_ok=True)  # onnx appends to an existing data file
    onnx.save_model(model, str(model_path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=BACKBONE_WEIGHTS, size_threshold=1024)
    (model_path.parent / BACKBONE_WEIGHTS).chmod(0o644)  # onnx creates it owner-only; the bundle is copied to devices


def parity_check(model, onnx_path: Path, recipe: Recipe, seed: int = 0) -> float:
    """Max |ORT - torch| of the features over random inputs."""
    import onnxruntime as ort
    import torch

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((recipe.parity_samples, 3, recipe.input_size, recipe.input_size)).astype(np.float32)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {INPUT_NAME: x})[0]
    with torch.no_grad():
        want = model.forward_features(torch.from_numpy(x)).numpy()
    return float(np.abs(got - want).max())


def same_model(a: AnchorSet, b: AnchorSet) -> bool:
    """Two anchor sets share one concept space: same dim, and the same model (by probe when both carry one)."""
    from edgecvm.offline.text_encoder import PROBE_MATCH

    if a.dim != b.dim:
        return False
    if a.model_probe is not None and b.model_probe is not None:
        return float(a.model_probe @ b.model_probe) >= PROBE_MATCH
    return a.model == b.model


def check_conse_anchors(anchors: AnchorSet, anchors_path: Path, imagenet: AnchorSet) -> None:
    """ConSE mixes ImageNet anchors; the device compares the mix with ``anchors``: both must be one space."""
    if not same_model(anchors, imagenet):
        raise BadInputError(
            f"{anchors_path}: --head-init conse needs anchors made with the model of {IMAGENET_ANCHORS.name} "
            f"({imagenet.model}, {imagenet.dim}-d), these are {anchors.model} ({anchors.dim}-d); rebuild them with "
            "`edgecvm anchors build` (default model) or use --head-init random")


def initial_head(model, anchors: AnchorSet, imagenet: AnchorSet | None, seed: int = 0, hidden: int = 0) -> HeadParams:
    """Without ImageNet anchors: a small-init projection (``random``). With them (``conse``, checked by
    check_conse_anchors): a projection whose output starts at zero + the frozen ImageNet classifier and
    anchors as a branch of weight 1, so the device names concepts zero-shot until taught.

    ``hidden`` > 0 makes the projection a small MLP (F -> hidden, ReLU -> D) for the gradient head; its first
    layer starts random (He) either way, so the zero start of the ConSE case is the last layer's.
    """
    from edgecvm.learning.conse import build_conse_branch

    feature_dim = model._fc.in_features
    rng = np.random.default_rng(seed)
    params = _projection(rng, feature_dim, hidden, anchors.dim, zero_out=imagenet is not None)
    kind = "mlp" if hidden else "linear"
    if imagenet is None:
        return HeadParams(kind, feature_dim, anchors.dim, params, hidden_dim=hidden)
    fc_w, fc_b = model._fc.weight.detach().numpy(), model._fc.bias.detach().numpy()
    if len(imagenet) != fc_w.shape[0]:
        raise BadInputError(f"{IMAGENET_ANCHORS}: {len(imagenet)} concepts, the classifier has {fc_w.shape[0]} classes; "
                            "rebuild it from edgecvm/resources/anchors/imagenet-1k.tsv")
    branch = build_conse_branch(fc_w, fc_b, imagenet.vectors, top_t=CONSE_TOP_T)
    return HeadParams(kind, feature_dim, anchors.dim, params, hidden_dim=hidden, conse=branch)


def _projection(rng: np.random.Generator, feature_dim: int, hidden: int, dim: int, zero_out: bool) -> dict[str, np.ndarray]:
    """Weights of the trainable projection: unit-variance outputs, or exactly zero outputs (``zero_out``)."""
    params: dict[str, np.ndarray] = {}
    fan_in = feature_dim
    if hidden:
        params["w1"] = (rng.standard_normal((feature_dim, hidden)) * np.sqrt(2.0 / feature_dim)).astype(np.float32)
        params["b1"] = np.zeros(hidden, np.float32)
        fan_in = hidden
    w = np.zeros((fan_in, dim), np.float32) if zero_out else (rng.standard_normal((fan_in, dim)) / np.sqrt(fan_in))
    params["w"], params["b"] = w.astype(np.float32), np.zeros(dim, np.float32)
    return params


def tool_versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import onnxscript
    import torch

    return {"edgecvm": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxscript": onnxscript.__version__, "onnxruntime": onnxruntime.__version__}


def _require_export_extra() -> None:
    """torch, onnx and onnxscript are not device dependencies; say how to get them instead of a traceback."""
    import importlib

    for name in ("torch", "onnx", "onnxscript"):
        try:
            importlib.import_module(name)
        except ImportError:
            raise BadInputError(f"`edgecvm export` needs {name}, which is not installed; install the export extra "
                                "with `pip install 'edgecvm[export]'` (torch==2.13.0 CPU)") from None


def _check_options(head_init: str, quantize: str | None, calibration: str | Path | None, head_hidden: int) -> None:
    if head_init not in HEAD_INITS:
        raise BadInputError(f"unknown --head-init {head_init!r}; choose one of {', '.join(HEAD_INITS)}")
    if head_hidden < 0:
        raise BadInputError(f"--head-hidden must be >= 0 (0: a linear projection), got {head_hidden}")
    if quantize is not None and quantize not in QUANTIZE:
        raise BadInputError(f"unknown --quantize {quantize!r}; choose one of {', '.join(QUANTIZE)}")
    if (quantize is None) != (calibration is None):
        raise BadInputError("--quantize int8 and --calibration DIR go together: int8 needs images to calibrate on")


def _check_out(out: Path) -> None:
    """Only ever replace a previous bundle (or an empty folder): --out must not delete the user's files."""
    if out.exists() and not (out.is_dir() and ((out / MANIFEST).is_file() or not any(out.iterdir()))):
        raise BadInputError(f"{out}: exists and is not a bundle folder; choose a new --out (it is replaced "
                            "only when it holds a previous bundle)")


def _move_into_place(tmp: Path, out: Path) -> None:
    """The old bundle stays whole until the new one has its name."""
    if not out.exists():
        tmp.rename(out)
        return
    old = out.with_name(f".{out.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def export_bundle(recipe_path: str | Path, anchors_path: str | Path, out: str | Path, head_init: str = "conse",
                  quantize: str | None = None, calibration: str | Path | None = None,
                  log: Callable[[str], None] = no_log, head_hidden: int = 0,
                  progress: ProgressFactory = silent, text_encoder: str | None = None) -> Manifest:
    """Build a bundle folder at ``out`` (replacing a previous bundle only once the new one is complete).

    ``text_encoder`` ("int8" or "fp32"): also put the anchors' language model in (text_encoder_export.py)."""
    from edgecvm.offline.quantize import quantize_backbone, split_calibration_folder
    from edgecvm.offline.text_encoder_export import check_precision, export_text_encoder

    _check_options(head_init, quantize, calibration, head_hidden)
    if text_encoder is not None:
        check_precision(text_encoder)
    recipe = load_recipe(recipe_path)
    _require_export_extra()
    anchors_path, out = resources.shipped_or_path("anchors", anchors_path, ".anchors.npz"), Path(out)
    if anchors_path.name in (BACKBONE, BACKBONE_WEIGHTS, HEAD, MANIFEST, *TEXT_ENCODER_FILES):
        raise BadInputError(f"{anchors_path}: an anchor file cannot be named like a bundle file; rename it")
    anchors = load_anchors(anchors_path)
    imagenet = load_anchors(IMAGENET_ANCHORS) if head_init == "conse" else None
    if imagenet is not None:
        check_conse_anchors(anchors, anchors_path, imagenet)
    _check_out(out)
    split = split_calibration_folder(Path(calibration), recipe.calibration_max_images) if calibration else None
    log(f"loading EfficientNet-Lite0 weights; exporting at {recipe.input_size} px")
    from edgecvm.offline.lite0_torch import load_pretrained

    model = load_pretrained()
    head = initial_head(model, anchors, imagenet, hidden=head_hidden)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o755)
    try:
        fp32 = tmp / (".fp32.onnx" if split else BACKBONE)
        export_onnx(model, recipe, fp32)
        diff = parity_check(model, fp32, recipe)
        log(f"parity ONNX Runtime vs torch: max abs diff {diff:.2e} (tolerance {recipe.parity_tolerance:.0e})")
        if not diff < recipe.parity_tolerance:
            raise BadInputError(f"{recipe_path}: ONNX export disagrees with torch (max abs diff {diff:.2e} >= "
                                f"{recipe.parity_tolerance:.0e}); the exported model is not trustworthy")
        quantization = {}
        if split:
            report = quantize_backbone(fp32, tmp / BACKBONE, split, recipe.preprocessor(), recipe.int8_min_cosine, log,
                                       progress=progress)
            fp32.unlink()
            quantization = {"method": "onnxruntime quantize_static, QDQ, per-channel int8 weights, uint8 "
                            "activations, MinMax calibration", "calibration_dir": str(calibration), **asdict(report)}
        split_weights(tmp / BACKBONE)
        save_head(tmp / HEAD, head)
        shutil.copyfile(anchors_path, tmp / anchors_path.name)
        parts = export_text_encoder(tmp, anchors, text_encoder, log) if text_encoder else []
        files = {name: sha256_file(tmp / name)
                 for name in (BACKBONE, BACKBONE_WEIGHTS, HEAD, anchors_path.name, *parts)}
        manifest = Manifest(
            format=BUNDLE_FORMAT, version=BUNDLE_VERSION, backbone=recipe.backbone, input_size=recipe.input_size,
            resize=recipe.resize, interpolation=recipe.interpolation, mean=recipe.mean, std=recipe.std,  # type: ignore[arg-type]
            feature_dim=head.feature_dim, concept_dim=anchors.dim, precision="int8" if split else "fp32",
            head_init=head_init,  # type: ignore[arg-type]
            anchors_file=anchors_path.name, anchors_sha256=files[anchors_path.name], anchors_model=anchors.model,
            files=files, tools=tool_versions(), parity_max_abs_diff=diff,
            recipe={"file": Path(recipe_path).name, **asdict(recipe)}, quantization=quantization,
        )
        manifest = write_manifest(tmp, manifest)
        load_bundle(tmp)  # verify what we wrote before it replaces anything
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest
