"""Real Tiny-ImageNet features for tests: `make eval`'s bundle and feature cache when present, otherwise (a fresh
clone) a slice of the zip extracted for the test session with the test bundle: SLICE_CLASSES classes spread over
the 200, SLICE_TRAIN training and SLICE_VAL val images each (~20 s). Skipped without the zip."""

from __future__ import annotations

import math
from pathlib import Path

from edgecvm import resources
from edgecvm.device.profiles import load_profile
from edgecvm.eval.feature_cache import CHUNK, FeatureTable, cache_folder, list_dataset, load_features
from edgecvm.formats.bundle import load_bundle

EVAL_BUNDLE = Path(__file__).resolve().parent.parent / "export" / "build" / "lite0-224"  # make eval's
SLICE_CLASSES, SLICE_TRAIN, SLICE_VAL = 20, 40, 10


def features(tiny_zip: Path, test_bundle: Path, cache: Path) -> tuple[Path, FeatureTable]:
    """(bundle, its features): make eval's when cached, else a slice extracted with ``test_bundle`` into ``cache``."""
    if (EVAL_BUNDLE / "manifest.json").is_file():
        table = _cached(tiny_zip, EVAL_BUNDLE)
        if table is not None:
            return EVAL_BUNDLE, table
    images = list_dataset(tiny_zip)
    every = sorted({image.concept for image in images})
    chosen = set(every[:: len(every) // SLICE_CLASSES][:SLICE_CLASSES])
    val: dict[str, int] = {}
    kept = []
    for image in sorted(images, key=lambda i: (i.concept, i.split, i.number)):
        if image.concept not in chosen:
            continue
        if image.split == "train" and image.number < SLICE_TRAIN:
            kept.append(image)
        elif image.split == "val" and val.get(image.concept, 0) < SLICE_VAL:
            val[image.concept] = val.get(image.concept, 0) + 1
            kept.append(image)
    return test_bundle, load_features(load_bundle(str(test_bundle)), load_profile("host"), tiny_zip, cache, kept)


def _cached(tiny_zip: Path, bundle_dir: Path) -> FeatureTable | None:
    bundle = load_bundle(str(bundle_dir))
    images = list_dataset(tiny_zip)
    folder = cache_folder(resources.user_cache_dir(), bundle, tiny_zip, images)
    if len(list(folder.glob("chunk-*.npz"))) < math.ceil(len(images) / CHUNK):
        return None
    return load_features(bundle, load_profile("host"), tiny_zip, resources.user_cache_dir(), images)
