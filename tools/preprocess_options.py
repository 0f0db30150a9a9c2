"""Which preprocessing is cheapest and still correct? Candidates measured side by side on the same frames.

For the built-in sample at its own 64 px and re-encoded at camera sizes
(quality-90 JPEGs), per frame, interleaved in rounds so load from other
processes hits every candidate alike:

* decode: the full JPEG, and the device's: libjpeg's reduced-scale decode
  (``Image.draft``) where the centre crop keeps twice the input size
  (``Preprocessor.decode_size``), with half-scale decoding for comparison;
* preprocess: the plain recipe (resize the whole frame, crop, normalise in
  three numpy passes) against ``device.preprocess.Preprocessor`` (only the
  crop resized, normalised in place);
* parity: the largest pixel difference, and the cosine (mean, min) between
  the backbone features of each candidate and those of the plain recipe on a
  full decode.

Usage: python tools/preprocess_options.py --bundle export/build/lite0-224 [--images 40] [--rounds 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import time
from pathlib import Path
from statistics import median

import numpy as np
from PIL import Image

from edgecvm import resources
from edgecvm.device.image_files import decode_image
from edgecvm.device.preprocess import Preprocessor
from edgecvm.device.profiles import load_profile
from edgecvm.device.runtime import FeatureExtractor
from edgecvm.formats.bundle import load_bundle

SIZES = (None, (640, 480), (1280, 720), (1920, 1080), (4032, 3024))  # None: the sample's own 64 x 64 JPEGs


def plain(pre: Preprocessor, image: Image.Image) -> np.ndarray:
    """The recipe as first written: resize the whole frame, crop the centre, then numpy."""
    new_w, new_h = pre.resized_size(*image.size)
    resized = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    left, top = (new_w - pre.input_size) // 2, (new_h - pre.input_size) // 2
    arr = np.asarray(resized.crop((left, top, left + pre.input_size, top + pre.input_size)), np.float32) * (1 / 255)
    arr = (arr - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def decode(data: bytes, pre: Preprocessor | None = None) -> Image.Image:
    """The whole JPEG, or (``pre``) as the device decodes it."""
    image, error = decode_image(data, None if pre is None else pre.decode_size)
    if image is None:
        raise SystemExit(error)
    return image


def decode_half(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.draft(None, (image.size[0] // 2, image.size[1] // 2))
    return image.convert("RGB")


def encoded(path: Path, size: tuple[int, int] | None) -> bytes:
    if size is None:
        return path.read_bytes()
    out = io.BytesIO()
    Image.open(path).convert("RGB").resize(size, Image.Resampling.BICUBIC).save(out, "JPEG", quality=90)
    return out.getvalue()


def measure(size: tuple[int, int] | None, paths: list[Path], extractor: FeatureExtractor, rounds: int) -> None:
    """Print one size's timings and parity."""
    pre = extractor.preprocess
    data = [encoded(path, size) for path in paths]
    full = [decode(d) for d in data]
    drafted = [decode(d, pre) for d in data]
    candidates = {
        "decode full": lambda: [decode(d) for d in data],
        "decode as the device": lambda: [decode(d, pre) for d in data],
        "preprocess plain": lambda: [plain(pre, image) for image in full],
        "preprocess Preprocessor": lambda: [pre(image) for image in full],
        "decode full + Preprocessor": lambda: [pre(decode(d)) for d in data],
        "as the device, both": lambda: [pre(decode(d, pre)) for d in data],
    }
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, run in candidates.items():
            started = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - started) * 1000 / len(data))
    reference = extractor.run(np.stack([plain(pre, image) for image in full]))

    def cosine(images: list[Image.Image]) -> str:
        features = extractor.run(pre.batch(images))
        cos = (features * reference).sum(1) / np.linalg.norm(features, axis=1) / np.linalg.norm(reference, axis=1)
        return f"mean {cos.mean():.5f}, min {cos.min():.5f}"

    pixels = max(float(np.abs(pre(image) - plain(pre, image)).max()) for image in full)
    label = "64x64 sample" if size is None else f"{size[0]}x{size[1]}"
    print(f"{label}: the device decodes it at {drafted[0].size[0]}x{drafted[0].size[1]}")
    for name, samples in times.items():
        print(f"  {name:<26} {median(samples):6.2f} ms/frame (median of {rounds} rounds)")
    print(f"  Preprocessor vs plain: largest difference {pixels * 127.5:.1f} levels of 255, "
          f"feature cosine {cosine(full)}")
    print(f"  decoded as the device + Preprocessor vs plain: feature cosine {cosine(drafted)}")
    halves = [decode_half(d) for d in data]
    print(f"  decoded at half size ({halves[0].size[0]}x{halves[0].size[1]}) + Preprocessor vs plain: "
          f"feature cosine {cosine(halves)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    bundle = load_bundle(args.bundle)
    profile = dataclasses.replace(load_profile("host"), resolution=bundle.manifest.input_size)
    extractor = FeatureExtractor(bundle, profile)
    paths = sorted((resources.sample_dir() / "val").glob("*/*.JPEG"))
    paths = paths[:: max(1, len(paths) // args.images)][: args.images]
    for size in SIZES:
        measure(size, paths, extractor, args.rounds)


if __name__ == "__main__":
    main()
