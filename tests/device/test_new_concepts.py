"""Concept names the anchor file lacks: embedded on the device by the bundle's text encoder, kept in the state dir."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import yaml

import edgecvm
from edgecvm import resources
from edgecvm.device.new_concepts import new_concepts_path
from edgecvm.device.profiles import load_profile
from edgecvm.device.state_summary import describe_state
from edgecvm.device.text_encoder import open_text_encoder
from edgecvm.formats.anchors import load_anchors
from edgecvm.formats.bundle import load_bundle
from edgecvm.formats.integrity import sha256_file


def _images(samples_dir: Path, concept: str, split: str = "train") -> list[Path]:
    return sorted((samples_dir / split / concept).glob("*.JPEG"))


def test_a_new_name_is_taught_predicted_listed_and_resumed(tmp_path: Path, encoder_bundle: Path,
                                                           samples_dir: Path) -> None:
    state = tmp_path / "state"
    bundle_files = {p.name: sha256_file(p) for p in encoder_bundle.iterdir()}
    with edgecvm.open_device(encoder_bundle, state=state) as device:
        assert "garden gnome" not in device.learner.anchors
        for path in _images(samples_dir, "lemon")[:12]:  # the sample has no gnomes: lemons stand in for one
            device.teach(path, "garden gnome")
        for path in _images(samples_dir, "goldfish")[:12]:
            device.teach(path, "goldfish")
        assert device.known == ["garden gnome", "goldfish"]
        assert device.add_concepts(["Garden  Gnome", "goldfish"]) == []  # known names, in any spelling
        made = device.learner.anchors.vectors[device.learner.anchors.index_of("garden gnome")].copy()
    assert load_anchors(new_concepts_path(state)).names == ("garden gnome",)
    assert {p.name: sha256_file(p) for p in encoder_bundle.iterdir()} == bundle_files  # the bundle is never edited

    with edgecvm.open_device(encoder_bundle, state=state, read_only=True) as device:
        assert device.known == ["garden gnome", "goldfish"]
        anchors = device.learner.anchors
        assert len(anchors) == 201 and anchors.names[-1] == "garden gnome"
        np.testing.assert_array_equal(anchors.vectors[-1], made)  # the same vector after the restart
        answers = [device.predict(path).concept for path in _images(samples_dir, "lemon", "val")]
        assert answers.count("garden gnome") >= 8, answers
        assert device.predict(_images(samples_dir, "lemon", "val")[0], vocab="all").top_k  # among all 201


def test_the_new_anchor_sits_where_its_meaning_is(encoder_bundle: Path) -> None:
    with edgecvm.open_device(encoder_bundle) as device:  # no state dir: kept in memory only
        device.add_concepts(["tabby kitten", "yellow school bus"])
        anchors = device.learner.anchors
        nearest = {name: anchors.names[int(np.argsort(anchors.vectors[:200] @ anchors.vectors[anchors.index_of(name)])[-1])]
                   for name in ("tabby kitten", "yellow school bus")}
    assert nearest == {"tabby kitten": "tabby", "yellow school bus": "school bus"}


def test_without_the_encoder_the_error_says_so_and_lists_close_names(tmp_path: Path, test_bundle: Path,
                                                                      samples_dir: Path) -> None:
    state = tmp_path / "state"
    with edgecvm.open_device(test_bundle, state=state) as device:
        with pytest.raises(edgecvm.BadInputError, match=r"carries no text encoder.*Close names: 'goldfish'.*"
                                                         r"--text-encoder"):
            device.teach(_images(samples_dir, "goldfish")[0], "goldfsh")
        with pytest.raises(edgecvm.BadInputError, match="non-empty"):
            device.add_concepts(["   "])
        assert device.known == []
    assert not new_concepts_path(state).exists()


def test_a_budget_that_cannot_hold_the_encoder_refuses_new_names_only(tmp_path: Path, encoder_bundle: Path,
                                                                        samples_dir: Path) -> None:
    with edgecvm.open_device(encoder_bundle) as device:
        plan_mb = device.plan.total_bytes / 2**20
    profile = yaml.safe_load(resources.profiles_dir().joinpath("host.yaml").read_text())
    profile.update(memory_budget_mb=int(plan_mb) + 10)  # the learner fits, the encoder's ~50 MB on top do not
    (tmp_path / "tight.yaml").write_text(yaml.safe_dump(profile))
    with edgecvm.open_device(encoder_bundle, profile=tmp_path / "tight.yaml", state=tmp_path / "state") as device:
        image = _images(samples_dir, "goldfish")[0]
        with pytest.raises(edgecvm.BudgetExceededError, match=r"text encoder .*'garden gnome'(.|\n)*text encoder "
                                                              r"\(on demand\)"):
            device.teach(image, "garden gnome")
        device.teach(image, "goldfish")  # a name of the anchor file needs no encoder
        assert device.known == ["goldfish"]
    assert not new_concepts_path(tmp_path / "state").exists()


def test_a_corrupt_file_falls_back_to_the_previous_one(tmp_path: Path, encoder_bundle: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    state = tmp_path / "state"
    with edgecvm.open_device(encoder_bundle, state=state) as device:
        assert device.add_concepts(["garden gnome"]) == ["garden gnome"]
        assert device.add_concepts(["blue mug", "red kite"], ["a drinking cup", ""]) == ["blue mug", "red kite"]
        device.teach(np.full((64, 64, 3), 90, np.uint8), "garden gnome")  # a checkpoint for `state show` to read
    assert describe_state(state).new_concepts == ["garden gnome", "blue mug", "red kite"]  # `edgecvm state show`
    path = new_concepts_path(state)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING), edgecvm.open_device(encoder_bundle, state=state) as device:
        assert device.learner.anchors.names[200:] == ("garden gnome",)  # what the previous file held
    assert "unusable" in caplog.text and path.name in caplog.text
    path.with_name(path.name + ".prev").write_bytes(bytes(data))
    with pytest.raises(edgecvm.IntegrityError, match="both files") as refused:
        edgecvm.open_device(encoder_bundle, state=state)
    # a state dir's own names are restored from a copy, not rebuilt from a concept list like a shipped anchor file
    assert "restore the state dir from a copy" in str(refused.value) and "anchors build" not in str(refused.value)


def test_the_encoder_session_is_released_after_use(encoder_bundle: Path) -> None:
    bundle = load_bundle(encoder_bundle)
    with open_text_encoder(bundle, load_profile("host")) as encoder:
        vectors = encoder.encode(["a photo of a garden gnome.", "a photo of a blue mug."])
        assert vectors.shape == (2, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert encoder.session is None
    with pytest.raises(edgecvm.BadInputError, match="released"):
        encoder.encode(["anything"])
