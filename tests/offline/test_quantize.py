"""`export --quantize int8`: smaller backbone whose features still agree with fp32 on images it never saw."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from device_cli import run_cli
from PIL import Image

from edgecvm import resources
from edgecvm.device.preprocess import Preprocessor
from edgecvm.device.profiles import load_profile
from edgecvm.device.runtime import FeatureExtractor
from edgecvm.errors import BadInputError
from edgecvm.formats.bundle import load_bundle
from edgecvm.offline.quantize import CALIBRATION_STRIDE, split_calibration_folder

pytest.importorskip("torch")

TINY_ANCHORS = resources.anchors_file("tiny-imagenet-200.anchors.npz")
# Measured with the fixture's settings (32 calibration images of the built-in sample, 224 px): mean cosine 0.985
# (min 0.940) on the 12 held-out images, 0.989 (min 0.958) on all 100 val images; 0.988 on 200 Tiny-ImageNet val
# images. Per-tensor weights give 0.72 and reduce_range 0.955, so 0.97 separates working from broken.
MIN_COSINE = 0.97


@pytest.fixture(scope="module")
def int8_bundle(tmp_path_factory: pytest.TempPathFactory, samples_dir: Path) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("int8")
    recipe = yaml.safe_load((resources.recipe("lite0-224.yaml")).read_text()) | {"calibration_max_images": 48}
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    log = _run(["export", "--recipe", folder / "recipe.yaml", "--anchors", TINY_ANCHORS, "--out",
                        folder / "bundle", "--quantize", "int8", "--calibration", samples_dir / "train"])
    return folder / "bundle", log


def _run(args: list[object]) -> str:
    """The CLI in-process with stderr captured by hand (module fixtures cannot use capsys)."""
    import contextlib
    import io

    from edgecvm.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main([str(a) for a in args])
    assert code == 0, err.getvalue()
    return err.getvalue()


def features(bundle_dir: Path, batch: np.ndarray) -> np.ndarray:
    """As a device computes them: the session ``open_device`` builds, exact int8 sums included where the CPU needs
    them (device/int8_kernels.py)."""
    bundle = load_bundle(bundle_dir)
    profile = dataclasses.replace(load_profile("host"), resolution=bundle.manifest.input_size)
    return FeatureExtractor(bundle, profile).run(batch)


def test_int8_bundle_is_smaller_and_records_its_quantization(int8_bundle, test_bundle: Path) -> None:
    folder, log = int8_bundle
    bundle = load_bundle(folder)
    m = bundle.manifest
    q = m.quantization
    assert m.precision == "int8" and m.head_init == "conse"
    assert (q["calibration_images"], q["heldout_images"]) == (32, 12)
    # sizes of the self-contained files; the bundle then holds each as graph + external weights, a few kB apart
    assert q["int8_bytes"] == pytest.approx(bundle.backbone_bytes, rel=0.01)
    assert q["fp32_bytes"] == pytest.approx(load_bundle(test_bundle).backbone_bytes, rel=0.01)  # the same fp32 graph
    assert q["int8_bytes"] * 3 < q["fp32_bytes"]
    assert MIN_COSINE <= q["cosine_mean"] <= 1 and q["cosine_min"] <= q["cosine_mean"]
    assert "int8: calibrating on 32 images, 12 held out" in log and "feature cosine vs fp32" in log
    assert sorted(p.name for p in folder.parent.iterdir()) == ["bundle", "recipe.yaml"]  # no temp files left


def test_int8_features_agree_with_fp32_on_unseen_images(int8_bundle, test_bundle: Path, samples_dir: Path) -> None:
    """Independent of the export's own report: the sample's val images were never used to calibrate."""
    folder, _ = int8_bundle
    images = [Image.open(p) for p in sorted((samples_dir / "val").glob("*/*"))[::5]]
    batch = Preprocessor.from_manifest(load_bundle(folder).manifest).batch(images)
    ref, got = features(test_bundle, batch), features(folder, batch)
    cosine = (ref * got).sum(axis=1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    assert len(images) == 20 and cosine.mean() >= MIN_COSINE and cosine.min() > 0.9


def test_split_holds_out_every_fourth_image_and_calibrates_on_whole_strides(tmp_path: Path) -> None:
    for i in range(23):
        Image.new("RGB", (8, 8), (i, i, i)).save(tmp_path / f"{i:02d}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    split = split_calibration_folder(tmp_path, max_images=256)
    names = [Path(o).stem for o in split.calibration + split.heldout]
    assert [Path(o).stem for o in split.heldout] == ["03", "07", "11", "15", "19"]
    assert len(split.calibration) == 16 and len(split.calibration) % CALIBRATION_STRIDE == 0
    assert len(set(names)) == len(names)  # calibration and held-out images never overlap
    assert len(split_calibration_folder(tmp_path, max_images=12).heldout) == 3


@pytest.mark.parametrize("case", ["missing", "too few"])
def test_unusable_calibration_folders_are_refused(tmp_path: Path, case: str) -> None:
    folder = tmp_path / "calib"
    if case == "too few":
        folder.mkdir()
        for i in range(9):
            Image.new("RGB", (8, 8)).save(folder / f"{i}.png")
    with pytest.raises(BadInputError, match="calib: (calibration folder not found|9 images; int8 needs 8)"):
        split_calibration_folder(folder, max_images=256)


def test_corrupt_calibration_image_is_one_line_naming_it(capsys, tmp_path: Path, samples_dir: Path) -> None:
    calib = tmp_path / "calib"
    shutil.copytree(samples_dir / "val" / "sock", calib)
    (calib / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    run = run_cli(capsys, "export", "--recipe", resources.recipe("lite0-160.yaml"), "--anchors", TINY_ANCHORS,
                  "--out", tmp_path / "out", "--quantize", "int8", "--calibration", calib)
    last = run.stderr.strip().splitlines()[-1]
    assert run.code == 2 and last.startswith("edgecvm: error: ") and "broken.jpg: cannot decode image" in last
    assert "Traceback" not in run.stderr and not (tmp_path / "out").exists()
