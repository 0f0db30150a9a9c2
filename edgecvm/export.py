"""Offline export: EfficientNet-Lite0 (torch) → a verified bundle folder the device loads.

Steps, each checked: build the torch model from the packaged ImageNet weights;
export its pooled-feature graph to ONNX (dynamic batch); compare ONNX Runtime
with torch on random inputs (the export fails above the recipe's tolerance);
write the initial head (random, or ConSE zero-shot); copy the anchor file in;
write the manifest with every file's sha256. Everything happens in a temp
folder renamed into place at the end, so a failed export never leaves half a
bundle where the device would look for one.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from edgecvm import __version__
from edgecvm.anchors import AnchorSet, load_anchors
from edgecvm.bundle import BACKBONE, BUNDLE_FORMAT, BUNDLE_VERSION, HEAD, Manifest, load_bundle, write_manifest
from edgecvm.errors import BadInputError
from edgecvm.head_file import HeadParams, save_head
from edgecvm.integrity import sha256_file
from edgecvm.schema import from_dict

REPO = Path(__file__).resolve().parent.parent
IMAGENET_ANCHORS = REPO / "anchors" / "imagenet-1k.anchors.npz"


@dataclass(frozen=True)
class Recipe:
    backbone: str
    input_size: int
    resize: int
    interpolation: str = "bilinear"
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    opset: int = 17
    parity_tolerance: float = 1e-4
    parity_samples: int = 4


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise BadInputError(f"{path}: recipe not found; see export/lite0-224.yaml for an example") from None
    except yaml.YAMLError as exc:
        raise BadInputError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from None
    recipe = from_dict(Recipe, data, str(path))
    if recipe.backbone != "efficientnet-lite0":
        raise BadInputError(f"{path}: unknown backbone {recipe.backbone!r}; available: efficientnet-lite0")
    if recipe.resize < recipe.input_size or recipe.input_size < 32:
        raise BadInputError(f"{path}: need 32 <= input_size <= resize (got {recipe.input_size}, {recipe.resize})")
    if recipe.interpolation not in ("bilinear", "bicubic") or len(recipe.mean) != 3 or len(recipe.std) != 3:
        raise BadInputError(f"{path}: interpolation must be bilinear|bicubic and mean/std three numbers each")
    return recipe


def export_onnx(model, recipe: Recipe, out: Path) -> None:
    """Pooled-feature graph, NCHW float32 input at the recipe size, dynamic batch, one self-contained file."""
    import torch

    class Features(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net.forward_features(x)

    dummy = torch.zeros(1, 3, recipe.input_size, recipe.input_size)
    with torch.no_grad(), warnings_quiet():
        torch.onnx.export(Features().eval(), (dummy,), str(out), input_names=["image"], output_names=["features"],
                          dynamic_axes={"image": {0: "batch"}, "features": {0: "batch"}},
                          opset_version=recipe.opset, dynamo=False)


@contextlib.contextmanager
def warnings_quiet():
    """The tracer warns about Python ints from shapes; they are constant for a fixed input size."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def parity_check(model, onnx_path: Path, recipe: Recipe, seed: int = 0) -> float:
    """Max |ORT - torch| of the features over random inputs."""
    import onnxruntime as ort
    import torch

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((recipe.parity_samples, 3, recipe.input_size, recipe.input_size)).astype(np.float32)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": x})[0]
    with torch.no_grad():
        want = model.forward_features(torch.from_numpy(x)).numpy()
    return float(np.abs(got - want).max())


def initial_head(model, anchors: AnchorSet, init: str, seed: int = 0) -> HeadParams:
    """Random: small-init linear projection. ConSE: zero projection + the frozen ImageNet branch."""
    from edgecvm.conse import build_conse_branch

    feature_dim = model._fc.in_features
    rng = np.random.default_rng(seed)
    if init == "random":
        w = rng.standard_normal((feature_dim, anchors.dim)).astype(np.float32) / np.sqrt(feature_dim)
        return HeadParams("linear", feature_dim, anchors.dim, {"w": w, "b": np.zeros(anchors.dim, np.float32)})
    if init != "conse":
        raise BadInputError(f"unknown --head-init {init!r}; choose random or conse")
    imagenet = load_anchors(IMAGENET_ANCHORS)
    if imagenet.model != anchors.model or imagenet.dim != anchors.dim:
        raise BadInputError(f"--head-init conse needs anchors made with {imagenet.model} ({imagenet.dim}-d), the model of "
                            f"{IMAGENET_ANCHORS.name}; these are {anchors.model} ({anchors.dim}-d). Rebuild them with "
                            "`edgecvm anchors build` (default model) or use --head-init random")
    fc_w = model._fc.weight.detach().numpy()
    fc_b = model._fc.bias.detach().numpy()
    if len(imagenet) != fc_w.shape[0]:
        raise BadInputError(f"{IMAGENET_ANCHORS}: {len(imagenet)} concepts, the classifier has {fc_w.shape[0]} classes")
    branch = build_conse_branch(fc_w, fc_b, imagenet.vectors)
    zeros = {"w": np.zeros((feature_dim, anchors.dim), np.float32), "b": np.zeros(anchors.dim, np.float32)}
    return HeadParams("linear", feature_dim, anchors.dim, zeros, conse=branch)


def tool_versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch

    return {"edgecvm": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__}


def export_bundle(recipe_path: str | Path, anchors_path: str | Path, out: str | Path, head_init: str = "conse",
                  log: Callable[[str], None] = print) -> Manifest:
    """Build a bundle folder at ``out`` (replacing an existing one only once the new one is complete)."""
    from edgecvm.lite0_torch import load_pretrained

    recipe = load_recipe(recipe_path)
    anchors_path = Path(anchors_path)
    anchors = load_anchors(anchors_path)
    out = Path(out)
    log(f"loading EfficientNet-Lite0 weights; exporting at {recipe.input_size} px")
    model = load_pretrained()
    head = initial_head(model, anchors, head_init)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o755)
    try:
        export_onnx(model, recipe, tmp / BACKBONE)
        diff = parity_check(model, tmp / BACKBONE, recipe)
        log(f"parity ONNX Runtime vs torch: max abs diff {diff:.2e} (tolerance {recipe.parity_tolerance:.0e})")
        if not diff < recipe.parity_tolerance:
            raise BadInputError(f"{recipe_path}: ONNX export disagrees with torch (max abs diff {diff:.2e} >= "
                                f"{recipe.parity_tolerance:.0e}); the exported model is not trustworthy")
        save_head(tmp / HEAD, head)
        shutil.copyfile(anchors_path, tmp / anchors_path.name)
        files = {name: sha256_file(tmp / name) for name in (BACKBONE, HEAD, anchors_path.name)}
        manifest = Manifest(
            format=BUNDLE_FORMAT, version=BUNDLE_VERSION, backbone=recipe.backbone, input_size=recipe.input_size,
            resize=recipe.resize, interpolation=recipe.interpolation, mean=recipe.mean, std=recipe.std,  # type: ignore[arg-type]
            feature_dim=head.feature_dim, concept_dim=anchors.dim, precision="fp32", head_init=head_init,  # type: ignore[arg-type]
            anchors_file=anchors_path.name, anchors_sha256=files[anchors_path.name], anchors_model=anchors.model,
            files=files, tools=tool_versions(), parity_max_abs_diff=diff,
            recipe={"file": Path(recipe_path).name, "opset": recipe.opset},
        )
        manifest = write_manifest(tmp, manifest)
        load_bundle(tmp)  # verify what we wrote before it replaces anything
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest
