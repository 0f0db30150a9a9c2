"""Frame → backbone input, in numpy/PIL, exactly as the export defined it.

The bundle manifest fixes every choice (resize of the shorter side, centre
crop, interpolation, mean/std) so the device feeds the ONNX model what the
torch model saw at export time. EfficientNet-Lite's TF weights expect pixels
scaled to [-1, 1] ((x - 127) / 128 on 0..255, i.e. mean = std = 0.5 on
[0, 1]), not the usual ImageNet mean/std. Measured on 600 Tiny-ImageNet val
images (3 per class, labels mapped to ImageNet-1k by wnid), 224 px: ImageNet
top-1 31.5 % with 0.5/0.5 vs 19.7 % with ImageNet mean/std; 160 px: 36.0 %
vs 22.8 % (64 px images upscaled, so 160 px is not worse here).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from edgecvm.formats.bundle import Manifest

_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
# A frame decoded smaller still has this many pixels per input pixel across its centre crop (``decode_size``).
DECODE_MARGIN = 2.0


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode (1, L, LA, P, PA, RGBA, CMYK, I;16, I, F) as 8-bit RGB.

    Transparent pixels are composited on black, whatever colour the file
    stores under them, so a cut-out object looks the same from any encoder.
    High-bit-depth greys (16-bit sensors, depth maps) are scaled by their own
    maximum when it exceeds 255, so they do not come out all white.
    """
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        top = arr.max() if arr.size and arr.max() > 255 else 255.0
        image = Image.fromarray(np.clip(arr * (255.0 / top), 0, 255).astype(np.uint8))
    if image.mode in ("LA", "PA", "RGBA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("RGB")
    return image.convert("RGB")


@dataclass(frozen=True)
class Preprocessor:
    """Resize the shorter side to ``resize``, centre-crop ``input_size``, scale to float and normalise.

    Why it is written this way (measured side by side, docs/benchmarks.md):
    the resize computes only the cropped window (PIL's ``box``), not the whole
    resized frame, and the normalisation runs in place on the (3, S, S) array
    with no intermediate copies. Both give exactly the pixels of resize, crop,
    then normalise (bit-identical on the 64 px sample; on larger frames PIL may
    round an odd pixel one level apart), in about half the time.
    """

    input_size: int
    resize: int
    interpolation: str
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> Preprocessor:
        return cls(manifest.input_size, manifest.resize, manifest.interpolation, manifest.mean, manifest.std)

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """The frame's size once its shorter side is ``resize`` (never below the crop)."""
        scale = self.resize / min(width, height)
        return max(self.input_size, round(width * scale)), max(self.input_size, round(height * scale))

    def decode_size(self, width: int, height: int) -> tuple[int, int]:
        """The smallest size worth decoding a ``width`` x ``height`` frame at: its centre crop keeps
        ``DECODE_MARGIN`` x the input size per side (the frame's own size when that needs all of it).

        Why: a JPEG decoder can scale by 1/2, 1/4 or 1/8 while it decodes
        (PIL's draft mode), far cheaper than decoding every pixel and resizing
        them away: a 12 MP photo at 224 px is decoded and preprocessed in a
        quarter to a sixth of the time. With at least twice the input's pixels
        left, the features stay those of the full decode (cosine 0.9993-0.9997
        on 1920 x 1080 and 4032 x 3024 frames); with fewer they do not (0.9986
        for a 640 x 480 frame decoded at half size), so a 640 x 480 or 1280 x
        720 frame is decoded whole at 224 px (docs/benchmarks.md).
        """
        factor = DECODE_MARGIN * self.resize / min(width, height)
        if factor >= 1.0:
            return width, height
        return math.ceil(width * factor), math.ceil(height * factor)

    def __call__(self, image: Image.Image, out: np.ndarray | None = None) -> np.ndarray:
        """One image as a (3, S, S) float32 array (written into ``out`` when given)."""
        image = to_rgb(image)
        size = self.input_size
        w, h = image.size
        new_w, new_h = self.resized_size(w, h)
        left, top = (new_w - size) // 2, (new_h - size) // 2
        sx, sy = w / new_w, h / new_h
        box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)  # the crop, in the frame's pixels
        pixels = np.asarray(image.resize((size, size), _RESAMPLE[self.interpolation], box=box))
        if out is None:
            out = np.empty((3, size, size), dtype=np.float32)
        np.multiply(pixels.transpose(2, 0, 1), np.float32(1.0 / 255.0), out=out, dtype=np.float32)
        out -= np.asarray(self.mean, np.float32)[:, None, None]
        out /= np.asarray(self.std, np.float32)[:, None, None]
        return out

    def batch(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(N, 3, S, S) float32, ready for the ONNX backbone."""
        out = np.empty((len(images), 3, self.input_size, self.input_size), dtype=np.float32)
        for i, image in enumerate(images):
            self(image, out[i])
        return out
