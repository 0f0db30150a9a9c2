"""Shared fixtures: where the real data is, and skipping cleanly when it is not."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecvm import resources

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
TINY_ZIP = SHARED_DATA / "tiny-imagenet-200-subset.zip"
SAMPLES = resources.sample_dir()


@pytest.fixture(scope="session")
def tiny_zip() -> Path:
    """The 50,000-image Tiny-ImageNet subset; tests using it skip when it is absent."""
    if not TINY_ZIP.is_file():
        pytest.skip(f"{TINY_ZIP} not present")
    return TINY_ZIP


@pytest.fixture(scope="session")
def imagenet_classes_tsv() -> Path:
    path = SHARED_DATA / "imagenet-1k-classes.tsv"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return path


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    """The built-in 10-class sample shipped in the package (always present)."""
    return SAMPLES


@pytest.fixture(scope="session")
def test_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 224 px ConSE bundle over the shipped Tiny-ImageNet-200 anchors, exported once per session (~8 s)."""
    from edgecvm.offline.export import export_bundle

    out = tmp_path_factory.mktemp("bundle") / "lite0-224"
    export_bundle(resources.recipe("lite0-224.yaml"), resources.anchors_file("tiny-imagenet-200.anchors.npz"), out,
                  head_init="conse", log=lambda _msg: None)
    return out


@pytest.fixture(scope="session")
def real_features(tiny_zip: Path, test_bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    """(bundle, Tiny-ImageNet features of it): make eval's cache, else a 20-class slice (tests/eval_features.py)."""
    import eval_features

    return eval_features.features(tiny_zip, test_bundle, tmp_path_factory.mktemp("features"))


@pytest.fixture(scope="session")
def encoder_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``test_bundle`` with the int8 text encoder (``export --text-encoder``), exported once per session (~40 s)."""
    from edgecvm.offline.export import export_bundle

    out = tmp_path_factory.mktemp("encoder-bundle") / "lite0-224-text"
    export_bundle(resources.recipe("lite0-224.yaml"), resources.anchors_file("tiny-imagenet-200.anchors.npz"), out,
                  head_init="conse", log=lambda _msg: None, text_encoder="int8")
    return out
