"""Shared fixtures: where the real data is, and skipping cleanly when it is not."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
TINY_ZIP = SHARED_DATA / "tiny-imagenet-200-subset.zip"
SAMPLES = REPO / "edgecvm" / "samples" / "tiny10"


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
