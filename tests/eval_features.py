"""`make eval`'s bundle and Tiny-ImageNet feature cache, for tests that need real features (extracting them here
would take minutes): each skips cleanly without them."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from edgecvm import resources
from edgecvm.device.profiles import load_profile
from edgecvm.eval.feature_cache import CHUNK, FeatureTable, cache_folder, list_dataset, load_features
from edgecvm.formats.bundle import load_bundle

EVAL_BUNDLE = Path(__file__).resolve().parent.parent / "export" / "build" / "lite0-224"  # make eval's


def eval_bundle() -> Path:
    if not (EVAL_BUNDLE / "manifest.json").is_file():
        pytest.skip(f"no bundle in {EVAL_BUNDLE} (make eval exports it)")
    return EVAL_BUNDLE


def cached_features(tiny_zip: Path, bundle_dir: Path) -> FeatureTable:
    bundle = load_bundle(str(bundle_dir))
    images = list_dataset(tiny_zip)
    folder = cache_folder(resources.user_cache_dir(), bundle, tiny_zip, images)
    if len(list(folder.glob("chunk-*.npz"))) < math.ceil(len(images) / CHUNK):
        pytest.skip(f"Tiny-ImageNet features are not cached in {folder} (make eval extracts them)")
    return load_features(bundle, load_profile("host"), tiny_zip, resources.user_cache_dir(), images)
