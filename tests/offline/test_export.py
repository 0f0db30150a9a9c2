"""`edgecvm export`: the bundle it writes, ONNX vs torch, the ConSE head, and every bad input."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import yaml
from device_cli import run_cli
from PIL import Image

from edgecvm import resources
from edgecvm.device.preprocess import Preprocessor
from edgecvm.errors import BadInputError, IntegrityError
from edgecvm.formats.anchors import AnchorSet, load_anchors, normalise_rows, save_anchors
from edgecvm.formats.bundle import BACKBONE, BACKBONE_WEIGHTS, HEAD, load_bundle
from edgecvm.formats.head_file import load_head
from edgecvm.learning.conse import conse_embed

torch = pytest.importorskip("torch")
skimage_data = pytest.importorskip("skimage.data")

RECIPE_224 = resources.recipe("lite0-224.yaml")
TINY_ANCHORS = resources.anchors_file("tiny-imagenet-200.anchors.npz")


@pytest.fixture(scope="module")
def lite0():
    from edgecvm.offline.lite0_torch import load_pretrained

    return load_pretrained()


def sample_images(samples_dir: Path, per_class: int = 1) -> list[Image.Image]:
    return [Image.open(sorted(folder.iterdir())[0]) for folder in sorted((samples_dir / "val").iterdir())][:10 * per_class]


def ort_features(bundle_dir: Path, batch: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(bundle_dir / BACKBONE), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: batch})[0]


def one_line_error(run) -> str:
    """Exit 2, nothing on stdout, and one error line closing stderr (after any progress lines), no traceback."""
    lines = run.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("edgecvm: error: ")]
    assert run.code == 2 and run.stdout == "" and errors == lines[-1:] and "Traceback" not in run.stderr, run
    return lines[-1]


def test_bundle_holds_verified_files_and_a_complete_manifest(test_bundle: Path) -> None:
    bundle = load_bundle(test_bundle)
    m = bundle.manifest
    names = [BACKBONE, BACKBONE_WEIGHTS, HEAD, TINY_ANCHORS.name]
    assert sorted(p.name for p in test_bundle.iterdir()) == sorted([*names, "manifest.json"])
    assert set(m.files) == set(names) and m.anchors_sha256 == m.files[TINY_ANCHORS.name]
    assert (m.backbone, m.input_size, m.resize, m.precision, m.head_init) == ("efficientnet-lite0", 224, 256, "fp32", "conse")
    assert (m.feature_dim, m.concept_dim) == (1280, 384) and m.mean == m.std == (0.5, 0.5, 0.5)
    assert m.anchors_model == load_anchors(TINY_ANCHORS).model
    assert {"torch", "onnx", "onnxruntime", "onnxscript", "edgecvm"} <= set(m.tools)
    assert m.recipe["file"] == RECIPE_224.name and m.recipe["opset"] >= 18 and m.quantization == {}
    assert m.parity_max_abs_diff is not None and 0 <= m.parity_max_abs_diff < 1e-4


def test_backbone_weights_live_beside_the_graph_readable_by_everyone(test_bundle: Path) -> None:
    graph, weights = test_bundle / BACKBONE, test_bundle / BACKBONE_WEIGHTS
    assert graph.stat().st_size < 1_000_000 < 13_000_000 < weights.stat().st_size  # the backbone holds 3.3 M float32 weights
    assert weights.stat().st_mode & 0o777 == 0o644
    assert load_bundle(test_bundle).backbone_bytes == graph.stat().st_size + weights.stat().st_size


def test_backbone_graph_has_a_dynamic_batch(test_bundle: Path) -> None:
    session = ort.InferenceSession(str(test_bundle / BACKBONE), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert inp.type == "tensor(float)" and isinstance(inp.shape[0], str) and inp.shape[1:] == [3, 224, 224]
    assert isinstance(out.shape[0], str) and out.shape[1:] == [1280]
    for n in (1, 3):
        assert session.run(None, {inp.name: np.zeros((n, 3, 224, 224), np.float32)})[0].shape == (n, 1280)


def test_onnx_features_match_torch_on_real_images(test_bundle: Path, lite0, samples_dir: Path) -> None:
    batch = Preprocessor.from_manifest(load_bundle(test_bundle).manifest).batch(sample_images(samples_dir))
    with torch.no_grad():
        want = lite0.forward_features(torch.from_numpy(batch)).numpy()
    got = ort_features(test_bundle, batch)
    assert np.abs(got - want).max() < 1e-4
    assert want.std() > 0.1  # real, varied features, not a degenerate all-zero comparison


def test_conse_head_is_the_frozen_imagenet_classifier_and_names_the_sample_photos(test_bundle: Path, lite0) -> None:
    head = load_head(test_bundle / HEAD)
    assert head.kind == "linear" and not head.params["w"].any() and not head.params["b"].any()
    assert head.conse is not None and (head.conse.weight, head.conse.top_t) == (1.0, 10)
    np.testing.assert_array_equal(head.conse.fc_w, lite0._fc.weight.detach().numpy().T)
    np.testing.assert_allclose(head.conse.anchors, load_anchors(resources.anchors_file("imagenet-1k.anchors.npz")).vectors)
    anchors = load_anchors(test_bundle / TINY_ANCHORS.name)
    pre = Preprocessor.from_manifest(load_bundle(test_bundle).manifest)
    photos = [Image.fromarray(skimage_data.chelsea()), Image.fromarray(skimage_data.coffee())]
    embedded = conse_embed(ort_features(test_bundle, pre.batch(photos)), head.conse)
    named = [anchors.names[i] for i in (embedded @ anchors.vectors.T).argmax(axis=1)]
    assert named[0] in ("Egyptian cat", "tabby", "Persian cat") and named[1] == "espresso", named


def test_random_head_export_through_the_cli(capsys, tmp_path: Path) -> None:
    out = tmp_path / "random"
    run = run_cli(capsys, "export", "--recipe", resources.recipe("lite0-160.yaml"), "--anchors", TINY_ANCHORS,
                  "--out", out, "--head-init", "random", "--json")
    assert run.code == 0, run.stderr
    reported = json.loads(run.stdout)
    assert reported["out"] == str(out) and reported["input_size"] == 160 and reported["head_init"] == "random"
    assert "parity ONNX Runtime vs torch" in run.stderr  # progress on stderr, JSON alone on stdout
    assert load_bundle(out).manifest.manifest_sha256 == reported["manifest_sha256"]
    head = load_head(out / HEAD)
    assert head.conse is None and head.params["w"].shape == (1280, 384)
    assert 0.5 < head.params["w"].std() * np.sqrt(1280) < 1.5  # small init: unit-variance outputs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["random"]  # no temp folder left behind


def test_failed_export_keeps_the_previous_bundle_and_leaves_no_half_bundle(capsys, tmp_path: Path,
                                                                           test_bundle: Path) -> None:
    out = tmp_path / "bundle"
    shutil.copytree(test_bundle, out)
    before = load_bundle(out).sha256
    recipe = yaml.safe_load(RECIPE_224.read_text()) | {"parity_tolerance": 1e-12}
    (tmp_path / "strict.yaml").write_text(yaml.safe_dump(recipe))
    run = run_cli(capsys, "export", "--recipe", tmp_path / "strict.yaml", "--anchors", TINY_ANCHORS, "--out", out)
    assert "ONNX export disagrees with torch" in one_line_error(run)
    assert load_bundle(out).sha256 == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "strict.yaml"]


def write_anchors(path: Path, model: str, dim: int) -> Path:
    rng = np.random.default_rng(dim)
    save_anchors(path, AnchorSet(("cat", "dog", "cup"), normalise_rows(rng.normal(size=(3, dim))), model, ("{}",),
                                 "float16", normalise_rows(rng.normal(size=(1, dim)))[0]))
    return path


@pytest.mark.parametrize("case", ["missing recipe", "unknown recipe key", "dim mismatch", "other model",
                                  "quantize without calibration", "out is not a bundle", "unknown backbone"])
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path: Path, case: str) -> None:
    recipe, anchors, out = RECIPE_224, TINY_ANCHORS, tmp_path / "out"
    extra: list[object] = []
    if case == "missing recipe":
        recipe, expected = tmp_path / "nope.yaml", "nope.yaml: recipe not found"
    elif case in ("unknown recipe key", "unknown backbone"):
        change = {"input_sise": 224} if case == "unknown recipe key" else {"backbone": "resnet50"}
        recipe = tmp_path / "typo.yaml"
        recipe.write_text(yaml.safe_dump(yaml.safe_load(RECIPE_224.read_text()) | change))
        expected = ("typo.yaml: unknown key 'input_sise' (did you mean 'input_size'?)" if case == "unknown recipe key"
                    else "typo.yaml: unknown backbone 'resnet50'")
    elif case == "dim mismatch":
        anchors = write_anchors(tmp_path / "small.anchors.npz", load_anchors(TINY_ANCHORS).model, 16)
        expected = "small.anchors.npz: --head-init conse needs anchors made with the model of imagenet-1k"
    elif case == "other model":
        anchors = write_anchors(tmp_path / "other.anchors.npz", "someone/other-model", 384)
        expected = "other.anchors.npz: --head-init conse needs anchors made with the model of imagenet-1k"
    elif case == "quantize without calibration":
        extra, expected = ["--quantize", "int8"], "--quantize int8 and --calibration DIR go together"
    else:
        out.mkdir()
        (out / "precious.txt").write_text("user data")
        expected = "out: exists and is not a bundle folder"
    run = run_cli(capsys, "export", "--recipe", recipe, "--anchors", anchors, "--out", out, *extra)
    assert expected in one_line_error(run)
    assert not out.exists() or (out / "precious.txt").read_text() == "user data"


@pytest.mark.parametrize("name", [BACKBONE, BACKBONE_WEIGHTS])
def test_tampered_bundle_file_is_detected(capsys, tmp_path: Path, test_bundle: Path, samples_dir: Path,
                                          name: str) -> None:
    copy = tmp_path / "tampered"
    shutil.copytree(test_bundle, copy)
    data = bytearray((copy / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / name).write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=f"{name}: sha256 does not match the manifest"):
        load_bundle(copy)
    run = run_cli(capsys, "predict", "--bundle", copy, "--stream", samples_dir / "val", "--limit", "1")
    assert f"{name}: sha256 does not match the manifest" in one_line_error(run)


def test_missing_export_extra_is_one_line_naming_the_install(capsys, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import fails as if the package were not installed
    run = run_cli(capsys, "export", "--recipe", RECIPE_224, "--anchors", TINY_ANCHORS, "--out", tmp_path / "out")
    assert "needs onnxscript, which is not installed; install the export extra" in one_line_error(run)


def test_shipped_recipes_and_anchor_files_are_found_by_name_from_any_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    from edgecvm.offline.export import load_recipe

    assert load_recipe("lite0-224") == load_recipe(resources.recipe("lite0-224.yaml"))
    assert resources.shipped_or_path("anchors", "tiny-imagenet-200", ".anchors.npz") == TINY_ANCHORS
    (tmp_path / "lite0-224").mkdir()  # a file or folder that exists is the user's, not the shipped one
    assert resources.shipped_or_path("recipes", "lite0-224", ".yaml") == Path("lite0-224")
    with pytest.raises(BadInputError, match=r"lite0-999: recipe not found; shipped recipes: lite0-160, lite0-224"):
        load_recipe("lite0-999")
