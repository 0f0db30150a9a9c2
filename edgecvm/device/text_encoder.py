"""The bundle's text encoder on the device: concept names -> concept-space vectors, without torch.

What sentence-transformers does for all-MiniLM-L6-v2, rebuilt from the
bundle's parts (formats/text_encoder_config.py): the model's own
``tokenizer.json`` through the ``tokenizers`` library (truncated to
``max_seq_length``, padded to the longest text of a batch), the ONNX network
(token ids -> token states), the mean of the states of the real tokens, L2
normalisation. ``concept_embedding.embed_names`` puts names into the anchor
file's templates around it, so a name embedded here lands where
``edgecvm anchors build`` would have put it (parity in docs/text-encoder.md).

The session is made when a name needs embedding and dropped right after
(``with open_text_encoder(...)``): ~25 MB of int8 weights a device uses once
per new concept should not stay resident next to the backbone. Importing this
module loads neither ``tokenizers`` nor a session.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import numpy as np
import onnxruntime as ort

from edgecvm.device.profiles import DeviceProfile
from edgecvm.device.runtime import select_providers
from edgecvm.errors import BadInputError, IntegrityError
from edgecvm.formats.anchors import normalise_rows
from edgecvm.formats.bundle import TEXT_ENCODER, TEXT_ENCODER_CONFIG, TOKENIZER, Bundle
from edgecvm.formats.text_encoder_config import TextEncoderConfig, read_text_encoder_config

INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # what the exported graph takes, int64 (N, T)
BATCH = 32  # texts per network run: bounds the activations (~1.5 MB per text of 16 tokens)
_FIX = "re-export the bundle with `edgecvm export --text-encoder`"


def open_text_encoder(bundle: Bundle, profile: DeviceProfile) -> TextEncoder:
    """The bundle's text encoder with the profile's threads and providers (``BadInputError`` when it has none)."""
    if not bundle.has_text_encoder:
        raise BadInputError(f"{bundle.folder}: this bundle carries no text encoder; {_FIX}")
    return TextEncoder(bundle.folder, profile.threads, profile.execution_providers)


class TextEncoder:
    """``encode(texts)`` -> (n, dim) float32 unit rows; a context manager that releases the session on exit.

    ``folder`` holds ``TEXT_ENCODER_FILES`` (a bundle, or an export's work folder); their hashes are the
    bundle's business (``load_bundle``), their contents are checked here.
    """

    def __init__(self, folder: Path, threads: int = 1,
                 providers: Sequence[str] = ("CPUExecutionProvider",)) -> None:
        self.config: TextEncoderConfig = read_text_encoder_config(folder / TEXT_ENCODER_CONFIG)
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise BadInputError("embedding concept names on the device needs the `tokenizers` package; "
                                "`pip install tokenizers`") from None
        try:
            self.tokenizer = Tokenizer.from_file(str(folder / TOKENIZER))
        except Exception as exc:  # the Rust side raises its own exception type for a malformed file
            raise IntegrityError(f"{folder / TOKENIZER}: not a tokenizer file ({exc}); {_FIX}") from None
        self.tokenizer.enable_truncation(self.config.max_seq_length)
        self.tokenizer.enable_padding()  # to the longest text of the batch, with the model's [PAD] (id 0)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.enable_cpu_mem_arena = False  # a few runs, then the session is dropped: nothing to pool for
        options.log_severity_level = 3
        path = folder / TEXT_ENCODER
        try:
            self.session: ort.InferenceSession | None = ort.InferenceSession(
                str(path), sess_options=options, providers=select_providers(providers))
        except Exception as exc:  # onnxruntime raises its own exception types for bad models
            raise IntegrityError(f"{path}: onnxruntime cannot load it ({exc}); {_FIX}") from None
        names = [i.name for i in self.session.get_inputs()]
        if sorted(names) != sorted(INPUTS) or self.session.get_outputs()[0].shape[-1] != self.config.dim:
            raise IntegrityError(f"{path}: graph takes {names} -> {self.session.get_outputs()[0].shape}, not "
                                 f"{list(INPUTS)} -> (N, T, {self.config.dim}); {_FIX}")

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32 unit rows (sentence-transformers' mean pooling and normalisation)."""
        if self.session is None:
            raise BadInputError("the text encoder was released; open it again to embed more text")
        out = [self._run(list(texts[start : start + BATCH])) for start in range(0, len(texts), BATCH)]
        return np.concatenate(out) if out else np.zeros((0, self.config.dim), dtype=np.float32)

    def _run(self, texts: list[str]) -> np.ndarray:
        assert self.session is not None
        encodings = self.tokenizer.encode_batch(texts)
        feed = {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64)}
        states = self.session.run(None, feed)[0]
        mask = feed["attention_mask"][..., None].astype(np.float32)
        pooled = (states * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
        return normalise_rows(pooled) if self.config.normalize else pooled.astype(np.float32)

    def close(self) -> None:
        """Drop the session (its weights and buffers go back to the allocator)."""
        self.session = None

    def __enter__(self) -> TextEncoder:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
