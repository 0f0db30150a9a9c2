"""``text_encoder.json``: how the bundle's optional text encoder turns text into a concept-space vector.

A bundle exported with ``--text-encoder`` carries the language model that made
its anchors (all-MiniLM-L6-v2) as ``text_encoder.onnx`` (token ids ->
per-token states), the model's own ``tokenizer.json`` (read by the
``tokenizers`` library) and this file, which says what sentence-transformers
does around the network: truncation, mean pooling over the real tokens,
L2 normalisation, and the description weight of concept_embedding.py. The
prompt templates are the anchor file's own. All three files are hashed in the
manifest like every bundle file; this one is also checked field by field.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from edgecvm.errors import BadInputError, IntegrityError
from edgecvm.formats.integrity import atomic_write_bytes
from edgecvm.formats.schema import from_dict

TEXT_ENCODER_FORMAT = "edgecvm.text_encoder"
TEXT_ENCODER_VERSION = 1
_FIX = "re-export the bundle with `edgecvm export --text-encoder`"


@dataclass(frozen=True)
class TextEncoderConfig:
    format: str
    version: int
    model: str  # id of the sentence-transformers model; the anchor file's model
    dim: int  # embedding size, = the anchors' dimension
    max_seq_length: int  # tokens per text, [CLS] and [SEP] included; longer texts are truncated
    pooling: Literal["mean"]  # mean of the token states where the attention mask is 1
    normalize: bool  # L2-normalise the pooled vector
    description_weight: float  # weight of "name: description" added to the template mean
    precision: Literal["int8", "fp32"]  # int8: weights dynamically quantised (onnxruntime quantize_dynamic)
    onnx_bytes: int
    fp32_bytes: int
    # sentence cosine, ONNX vs sentence-transformers, on the anchor file's names in its templates: mean, min, count
    parity: dict[str, float] = field(default_factory=dict)


def write_text_encoder_config(path: Path, config: TextEncoderConfig) -> None:
    atomic_write_bytes(path, (json.dumps(asdict(config), indent=2, sort_keys=True) + "\n").encode())


def read_text_encoder_config(path: Path) -> TextEncoderConfig:
    """Parse and check ``text_encoder.json``; ``IntegrityError`` naming the file for anything unusable."""
    try:
        data: Any = json.loads(path.read_text())
        config = from_dict(TextEncoderConfig, data, str(path))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, BadInputError) as exc:
        raise IntegrityError(f"{path}: unreadable text encoder settings ({exc}); {_FIX}") from None
    if config.format != TEXT_ENCODER_FORMAT or config.version != TEXT_ENCODER_VERSION:
        raise IntegrityError(f"{path}: unsupported text encoder {config.format!r} v{config.version}; {_FIX}")
    if not (config.dim > 0 and 2 < config.max_seq_length <= 4096 and config.description_weight >= 0
            and config.onnx_bytes > 0):
        raise IntegrityError(f"{path}: impossible text encoder values (dim, max_seq_length, description_weight, "
                             f"onnx_bytes); {_FIX}")
    return config
