"""`edgecvm eval` end to end on a tiny slice of the Tiny-ImageNet subset (4 classes, 2 tasks), and its bad input."""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import pytest

from edgecvm import resources
from edgecvm.cli import main
from edgecvm.eval.harness import method_names

CLASSES = 4
TRAIN, VAL = 6, 3  # images per class


@pytest.fixture(scope="module")
def tiny_slice(tiny_zip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A zip with the first few classes of the subset, same layout (wnids.txt, words.txt, train/, val/)."""
    out = tmp_path_factory.mktemp("slice") / "slice.zip"
    with zipfile.ZipFile(tiny_zip) as src, zipfile.ZipFile(out, "w") as dst:
        names = src.namelist()
        wnids = sorted({n.split("/")[2] for n in names if "/train/" in n})[:CLASSES]
        kept: dict[tuple[str, str], int] = {}
        for name in names:
            parts = name.split("/")
            if parts[-1] in ("wnids.txt", "words.txt"):
                dst.writestr(name, src.read(name))
            elif len(parts) >= 4 and parts[2] in wnids and parts[1] in ("train", "val"):
                key = (parts[1], parts[2])
                if kept.get(key, 0) < (TRAIN if parts[1] == "train" else VAL):
                    kept[key] = kept.get(key, 0) + 1
                    dst.writestr(name, src.read(name))
    return out


def _eval(bundle: Path, data: Path, tmp_path: Path, *extra: str) -> tuple[int, dict]:
    out = tmp_path / "eval.json"
    code = main(["eval", "--bundle", str(bundle), "--data", str(data), "--tasks", "2", "--cache",
                 str(tmp_path / "cache"), "--json", str(out), *extra])
    return code, json.loads(out.read_text()) if out.exists() else {}


def test_eval_runs_every_method_on_a_tiny_slice(test_bundle: Path, tiny_slice: Path, tmp_path: Path, capsys):
    methods = "cvm,cvm-noreplay,cvm:sgd,ncm,slda,softmax,softmax-replay,joint"
    code, doc = _eval(test_bundle, tiny_slice, tmp_path, "--methods", methods, "--joint-epochs", "2",
                      "--plot", str(tmp_path / "curve.png"))
    assert code == 0
    out = capsys.readouterr().out
    assert "| slda |" in out and "| cvm |" in out
    results = {r["name"]: r for r in doc["results"]}
    assert list(results) == methods.split(",")
    for name, r in results.items():
        matrix = r["metrics"]["matrix"]
        assert len(matrix) == 2 and matrix[0][1] is None  # lower triangle only
        final = r["metrics"]["final_average"]
        assert 0.0 <= final <= 1.0
        if name != "joint":  # joint is measured once, after everything
            assert final == pytest.approx((matrix[1][0] + matrix[1][1]) / 2)
            assert r["metrics"]["forgetting"] == pytest.approx(matrix[0][0] - matrix[1][0])
    assert results["ncm"]["metrics"]["final_average"] > 1 / CLASSES  # better than chance on real features
    assert results["cvm"]["memory_plan_mb"] > 0 and results["cvm"]["zero_shot"]["unseen_after_task"]
    assert (tmp_path / "curve.png").stat().st_size > 0
    # features were cached: a second run extracts nothing and gives the same figures
    code, again = _eval(test_bundle, tiny_slice, tmp_path, "--methods", "ncm")
    assert code == 0 and again["results"][0]["metrics"] == results["ncm"]["metrics"]


def test_few_shot_and_zero_shot_scenarios(test_bundle: Path, tiny_slice: Path, tmp_path: Path):
    code, doc = _eval(test_bundle, tiny_slice, tmp_path, "--scenario", "few-shot", "--shots", "2",
                      "--methods", "cvm,ncm")
    assert code == 0 and doc["scenario"]["shots"] == [2]
    code, doc = _eval(test_bundle, tiny_slice, tmp_path, "--scenario", "zero-shot", "--methods", "cvm")
    assert code == 0
    zero_shot = doc["results"][0]["metrics"]
    assert 0.0 <= zero_shot["dataset_vocabulary"] <= 1.0 and zero_shot["dataset_concepts"] == CLASSES
    assert not math.isnan(zero_shot["anchor_vocabulary"])


def test_zero_shot_over_another_anchor_file_by_wordnet_id(test_bundle: Path, tiny_slice: Path, tmp_path: Path,
                                                          imagenet_classes_tsv: Path, capsys):
    """The 4 classes are ImageNet-1k classes: by WordNet id every image's concept is among the 1,000 anchors."""
    code, doc = _eval(test_bundle, tiny_slice, tmp_path, "--scenario", "zero-shot", "--anchors", "imagenet-1k",
                      "--wordnet-ids", str(imagenet_classes_tsv))
    assert code == 0 and "| imagenet-1k.anchors.npz | 1,000 |" in capsys.readouterr().out
    own, broad = doc["results"]
    assert (own["concepts"], own["matched_by"], broad["concepts"], broad["matched_by"]) == (
        200, "name", 1000, "WordNet id")
    assert broad["covered"] == broad["images"] == CLASSES * VAL and broad["missing"] == []
    assert 0 <= broad["accuracy"]["top_1"] <= broad["accuracy"]["top_5"] <= 1


def test_bad_input_is_a_one_line_error(test_bundle: Path, tiny_slice: Path, tmp_path: Path, capsys):
    code, _ = _eval(test_bundle, tiny_slice, tmp_path, "--methods", "ncm,sdla")
    assert code == 2 and "unknown method 'sdla'" in capsys.readouterr().err
    code, _ = _eval(test_bundle, tiny_slice, tmp_path, "--shots", "3")
    assert code == 2 and "--shots only applies" in capsys.readouterr().err
    code, _ = _eval(test_bundle, tmp_path / "missing.zip", tmp_path)
    assert code == 2
    code, _ = _eval(test_bundle, tiny_slice, tmp_path, "--wordnet-ids", str(tmp_path / "ids.tsv"))
    assert code == 2 and "--wordnet-ids goes with --scenario zero-shot and --anchors" in capsys.readouterr().err


def test_method_names_accept_head_methods_by_name():
    assert method_names("cvm:lda, ncm") == ["cvm:lda", "ncm"]
    with pytest.raises(Exception, match="twice"):
        method_names("ncm,ncm")


def test_the_feature_cache_defaults_to_the_users_cache_folder(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resources.user_cache_dir() == tmp_path / "xdg" / "edgecvm"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for unset in ("", "relative/dir"):  # the XDG spec ignores a relative XDG_CACHE_HOME
        monkeypatch.setenv("XDG_CACHE_HOME", unset)
        assert resources.user_cache_dir() == tmp_path / "home" / ".cache" / "edgecvm"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert resources.user_cache_dir() == tmp_path / "home" / ".cache" / "edgecvm"


def test_eval_without_cache_writes_features_under_xdg_cache_home_not_the_working_dir(
        test_bundle: Path, tiny_slice: Path, tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    assert main(["eval", "--bundle", str(test_bundle), "--data", str(tiny_slice), "--tasks", "2",
                 "--methods", "ncm"]) == 0
    assert any((tmp_path / "xdg" / "edgecvm" / "features").rglob("chunk-*.npz"))
    assert not (tmp_path / ".cache").exists()
    assert f"cache {tmp_path / 'xdg' / 'edgecvm' / 'features'}" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    assert "$XDG_CACHE_HOME/edgecvm" in capsys.readouterr().out
