"""How close the device's text encoder comes to `edgecvm anchors build` (a measurement tool; docs/text-encoder.md).

    PYTHONPATH=. .venv/bin/python tools/text_encoder_parity.py --encoder BUNDLE [--encoder BUNDLE ...] \
        [--eval-bundle export/build/lite0-224 --data ../shared/data/tiny-imagenet-200-subset.zip]

For every bundle exported with ``--text-encoder``: its encoder's sizes, and the
cosine between the anchors it makes on the device (``device/text_encoder.py``
with the anchor files' templates and descriptions) and the shipped anchor
files `anchors build` made, for the 1,000 ImageNet-1k and the 200
Tiny-ImageNet concept lists. With ``--eval-bundle`` and ``--data``, the
continual-learning result (`make eval`'s scenario, ``cvm`` only) and zero-shot
accuracy, measured side by side on the cached features: with the shipped
anchors, then with every anchor (the 200 classes' and the ConSE head's 1,000
ImageNet ones) made by the first encoder. One JSON line per measurement.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from edgecvm import resources
from edgecvm.device.concept_embedding import embed_names
from edgecvm.device.profiles import load_profile
from edgecvm.device.text_encoder import TextEncoder
from edgecvm.eval.feature_cache import list_dataset, load_features
from edgecvm.eval.harness import HarnessConfig, MethodContext, run
from edgecvm.eval.scenarios import build_scenario
from edgecvm.formats.anchors import AnchorSet, load_anchors
from edgecvm.formats.bundle import load_bundle, load_head_and_anchors
from edgecvm.offline.concepts import read_concepts

LISTS = ("imagenet-1k", "tiny-imagenet-200")


def device_anchors(encoder: TextEncoder, stem: str) -> tuple[AnchorSet, AnchorSet, float]:
    """(shipped anchors, the same concepts embedded by ``encoder``, seconds per concept)."""
    shipped = load_anchors(resources.anchors_file(f"{stem}.anchors.npz"))
    concepts = read_concepts(resources.anchors_file(f"{stem}.tsv"))
    started = time.perf_counter()
    vectors = embed_names([c.name for c in concepts], [c.description for c in concepts], encoder.encode,
                          shipped.templates, encoder.config.description_weight)
    seconds = (time.perf_counter() - started) / len(concepts)
    made = AnchorSet(tuple(c.name for c in concepts), vectors, shipped.model, shipped.templates, "float16",
                     shipped.model_probe)
    return shipped, made, seconds


def parity(bundle_dir: Path, threads: int) -> dict[str, AnchorSet]:
    bundle = load_bundle(bundle_dir)
    made_sets = {}
    with TextEncoder(bundle.folder, threads) as encoder:
        config = encoder.config
        record: dict[str, object] = {"encoder": str(bundle_dir), "precision": config.precision,
                                     "onnx_mb": round(config.onnx_bytes / 1e6, 1),
                                     "fp32_mb": round(config.fp32_bytes / 1e6, 1)}
        for stem in LISTS:
            shipped, made, seconds = device_anchors(encoder, stem)
            cosine = np.sum(made.vectors * shipped.vectors[shipped.indices_of(made.names)], axis=1)
            worst = int(np.argmin(cosine))
            record[stem] = {"concepts": len(made), "cosine_mean": round(float(cosine.mean()), 4),
                            "cosine_min": round(float(cosine.min()), 4), "worst": made.names[worst],
                            "ms_per_concept": round(seconds * 1000, 1)}
            made_sets[stem] = made
    print(json.dumps(record), flush=True)
    return made_sets


def evaluate(bundle_dir: Path, data: Path, made: dict[str, AnchorSet], profile_name: str) -> None:
    bundle = load_bundle(bundle_dir)
    profile = load_profile(profile_name)
    images = list_dataset(data)
    features = load_features(bundle, profile, data, resources.user_cache_dir(), images)
    head, shipped = load_head_and_anchors(bundle)
    config = HarnessConfig(profile=profile, backbone_bytes=bundle.backbone_bytes,
                           input_size=bundle.manifest.input_size, seed=0)
    imagenet = load_anchors(resources.anchors_file("imagenet-1k.anchors.npz"))
    if head.conse is None or not np.allclose(head.conse.anchors, imagenet.vectors, atol=1e-6):
        raise SystemExit(f"{bundle_dir}: its ConSE branch is not over the shipped ImageNet-1k anchors")
    device_head = dataclasses.replace(head, conse=dataclasses.replace(
        head.conse, anchors=made["imagenet-1k"].vectors[made["imagenet-1k"].indices_of(imagenet.names)]))
    device_set = made["tiny-imagenet-200"].subset(shipped.names)
    for label, ctx_head, anchors in (("shipped", head, shipped), ("device", device_head, device_set)):
        ctx = MethodContext(config, ctx_head, anchors, features.concepts, bundle.manifest.feature_dim)
        incremental = build_scenario(features, "class-incremental", 10, 0, 1, None, "val")
        (cvm,) = run(incremental, ["cvm"], ctx)
        (zero,) = run(build_scenario(features, "zero-shot", 10, 0, 1, None, "val"), ["cvm"], ctx)
        print(json.dumps({"anchors": label, "cvm_final_average": cvm.metrics["final_average"],
                          "cvm_unseen_zero_shot_mean": cvm.zero_shot["unseen_mean"],
                          "zero_shot_200": zero.metrics["dataset_vocabulary"]}), flush=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", type=Path, action="append", required=True,
                        help="a bundle exported with --text-encoder (repeat for int8 and fp32)")
    parser.add_argument("--eval-bundle", type=Path, help="the bundle whose features are cached (make eval's)")
    parser.add_argument("--data", type=Path, help="the Tiny-ImageNet-200 subset zip")
    parser.add_argument("--profile", default="host")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    made = [parity(folder, args.threads) for folder in args.encoder]
    if args.eval_bundle and args.data:
        evaluate(args.eval_bundle, args.data, made[0], args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
