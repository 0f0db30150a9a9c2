"""The export bundle: a folder the device loads, described by ``manifest.json``.

A bundle holds ``backbone.onnx`` (frozen feature extractor; its weights in
``backbone.weights`` as ONNX external data, see ``export.split_weights``), ``head.npz``
(initial projection head), a copy of the anchor file, optionally the text
encoder that embeds new concept names on the device (``TEXT_ENCODER_FILES``), and ``manifest.json``
with the preprocessing settings and the sha256 of every file. The manifest
also carries a hash of itself, so editing it (say, the mean/std) is caught
like any other tampering. ``load_bundle`` verifies everything before the
device trusts a single byte.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from edgecvm.errors import BadInputError, IntegrityError
from edgecvm.formats.anchors import AnchorSet, load_anchors
from edgecvm.formats.head_file import HeadParams, load_head
from edgecvm.formats.integrity import atomic_write_bytes, sha256_bytes, sha256_file
from edgecvm.formats.schema import from_dict

BUNDLE_FORMAT = "edgecvm.bundle"
BUNDLE_VERSION = 1
MANIFEST = "manifest.json"
BACKBONE = "backbone.onnx"
BACKBONE_WEIGHTS = "backbone.weights"  # ONNX external data of BACKBONE; bundles exported before it have none
HEAD = "head.npz"
# The optional text encoder (`export --text-encoder`; formats/text_encoder_config.py): all three or none.
TEXT_ENCODER = "text_encoder.onnx"
TEXT_ENCODER_CONFIG = "text_encoder.json"
TOKENIZER = "tokenizer.json"
TEXT_ENCODER_FILES = (TEXT_ENCODER, TOKENIZER, TEXT_ENCODER_CONFIG)
_FIX = "re-export it with `edgecvm export`"
_MAX_PIXELS = 4096  # no edge backbone takes a larger input; bigger values are corruption or tampering


@dataclass(frozen=True)
class Manifest:
    """Everything the device needs to reproduce the export's preprocessing and verify files."""

    format: str
    version: int
    backbone: str  # e.g. "efficientnet-lite0"
    input_size: int  # square input, pixels
    resize: int  # shorter side is resized to this before the centre crop of input_size
    interpolation: Literal["bilinear", "bicubic"]
    mean: tuple[float, ...]  # per RGB channel, on pixels scaled to [0, 1]
    std: tuple[float, ...]
    feature_dim: int
    concept_dim: int
    precision: Literal["fp32", "int8"]
    head_init: Literal["random", "conse"]
    anchors_file: str  # file name inside the bundle folder
    anchors_sha256: str
    anchors_model: str
    files: dict[str, str]  # file name -> sha256, every file except the manifest
    tools: dict[str, str] = field(default_factory=dict)  # versions used to export
    parity_max_abs_diff: float | None = None  # ORT vs torch on random inputs
    recipe: dict[str, Any] = field(default_factory=dict)
    quantization: dict[str, Any] = field(default_factory=dict)  # int8 only: method, sizes, fp32 agreement
    manifest_sha256: str = ""


def _self_hash(data: dict[str, Any]) -> str:
    clean = {k: v for k, v in data.items() if k != "manifest_sha256"}
    return sha256_bytes(json.dumps(clean, sort_keys=True).encode())


def write_manifest(folder: Path, manifest: Manifest) -> Manifest:
    """Write ``manifest.json`` atomically, filling in its self-hash."""
    data = dataclasses.asdict(manifest)
    data["manifest_sha256"] = ""
    data = json.loads(json.dumps(data))  # tuples -> lists, as they will be read back
    data["manifest_sha256"] = _self_hash(data)
    atomic_write_bytes(folder / MANIFEST, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())
    return from_dict(Manifest, data, str(folder / MANIFEST))


@dataclass(frozen=True)
class Bundle:
    folder: Path
    manifest: Manifest

    @property
    def backbone_path(self) -> Path:
        return self.folder / BACKBONE

    @property
    def backbone_bytes(self) -> int:
        """Size of the backbone: graph file plus its external weights, when the bundle has them."""
        return sum((self.folder / name).stat().st_size for name in (BACKBONE, BACKBONE_WEIGHTS)
                   if name in self.manifest.files)

    @property
    def head_path(self) -> Path:
        return self.folder / HEAD

    @property
    def anchors_path(self) -> Path:
        return self.folder / self.manifest.anchors_file

    @property
    def has_text_encoder(self) -> bool:
        """The bundle can embed concept names on the device (exported with ``--text-encoder``)."""
        return all(name in self.manifest.files for name in TEXT_ENCODER_FILES)

    @property
    def sha256(self) -> str:
        """Identity of the bundle: keys feature caches and learner state."""
        return self.manifest.manifest_sha256


def load_head_and_anchors(bundle: Bundle) -> tuple[HeadParams, AnchorSet]:
    """The bundle's head and anchor file, each verified, and checked to live in the same concept space.

    Their hashes only say each file is intact; a bundle folder assembled by hand
    (or re-sealed) can still pair a head with another model's anchors.
    """
    head, anchors = load_head(bundle.head_path), load_anchors(bundle.anchors_path)
    if anchors.dim != head.concept_dim:
        raise IntegrityError(f"{bundle.anchors_path}: {anchors.dim}-d anchors, but {bundle.head_path} maps features to "
                             f"{head.concept_dim}-d; the two do not belong together: re-export the bundle with "
                             "`edgecvm export --anchors` and the anchor file it was built for")
    return head, anchors


def read_manifest(folder: Path) -> Manifest:
    path = folder / MANIFEST
    if not folder.is_dir():
        raise BadInputError(f"{folder}: bundle folder not found; create one with `edgecvm export`")
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BadInputError(f"{path}: missing; {folder} is not a bundle, {_FIX}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IntegrityError(f"{path}: unreadable or corrupt manifest ({type(exc).__name__}); {_FIX}") from None
    if not isinstance(data, dict):
        raise IntegrityError(f"{path}: corrupt manifest (not a JSON object); {_FIX}")
    if data.get("manifest_sha256") != _self_hash(data):
        raise IntegrityError(f"{path}: manifest checksum mismatch (edited or corrupt); {_FIX}")
    manifest = from_dict(Manifest, data, str(path))
    if manifest.format != BUNDLE_FORMAT or manifest.version != BUNDLE_VERSION:
        raise IntegrityError(f"{path}: unsupported bundle {manifest.format!r} v{manifest.version}; {_FIX}")
    _check_values(manifest, path)
    return manifest


def _check_values(manifest: Manifest, path: Path) -> None:
    """Types alone let through values the device cannot use (no std, std = 0, NaN, 0 px, a path as a file name)."""
    sizes_ok = 0 < manifest.input_size <= manifest.resize <= _MAX_PIXELS
    dims_ok = manifest.feature_dim > 0 and manifest.concept_dim > 0
    # mean/std apply to pixels scaled to [0, 1]: a mean outside that range or a std that blows the input up
    # by more than 1,000x is no normalisation any network was trained with (and NaN fails every comparison).
    norm_ok = (len(manifest.mean) == len(manifest.std) == 3 and all(0 <= m <= 1 for m in manifest.mean)
               and all(1e-3 <= s <= 1e3 for s in manifest.std))
    if not (sizes_ok and dims_ok and norm_ok):
        raise IntegrityError(f"{path}: impossible preprocessing values (sizes, dims, 3 means in [0, 1], "
                             f"3 stds in [0.001, 1000]); {_FIX}")
    # Files are plain names inside the bundle folder: no paths out of it, nothing that breaks a one-line error.
    names = [*manifest.files, manifest.anchors_file]
    if not all(n == Path(n).name and n not in ("", ".", "..") and n.isprintable() for n in names) or \
            not all(isinstance(sha, str) for sha in manifest.files.values()):
        raise IntegrityError(f"{path}: file list must map plain file names in the bundle folder to sha256 strings; "
                             f"{_FIX}")
    if 0 < sum(name in manifest.files for name in TEXT_ENCODER_FILES) < len(TEXT_ENCODER_FILES):
        raise IntegrityError(f"{path}: the text encoder needs all of {', '.join(TEXT_ENCODER_FILES)}; {_FIX}")


def load_bundle(folder: str | Path, verify: bool = True) -> Bundle:
    """Open a bundle folder; with ``verify`` every file's sha256 is checked against the manifest."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if verify:
        for name, expected in manifest.files.items():
            path = folder / name
            if not path.is_file():
                raise IntegrityError(f"{path}: missing from bundle; {_FIX}")
            if sha256_file(path) != expected:
                raise IntegrityError(f"{path}: sha256 does not match the manifest (corrupt or replaced); {_FIX}")
        if manifest.files.get(manifest.anchors_file) != manifest.anchors_sha256:
            raise IntegrityError(f"{folder / MANIFEST}: anchor file hash disagrees with the file list; {_FIX}")
    return Bundle(folder=folder, manifest=manifest)
