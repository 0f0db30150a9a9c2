"""The bundle's text encoder on the device: concept names -> concept-space vectors, without torch.

What sentence-transformers does for all-MiniLM-L6-v2, rebuilt from the
bundle's parts (formats/text_encoder_config.py): the model's own
``tokenizer.json`` through the ``tokenizers`` library (truncated to
``max_seq_length``), the ONNX network (token ids -> token states), the mean
of the token states, L2 normalisation.

One text per run, never a padded batch: the int8 network quantises its
activations with one scale per run, so in a batch a text's vector would
depend on the texts next to it (measured: up to 0.03 per component). Alone,
a name gets the same anchor however it is added, and no padding reaches the
pooling. It costs little (time per name: docs/text-encoder.md). ``concept_embedding.embed_names`` puts names into the anchor
file's templates around it, so a name embedded here lands where
``edgecvm anchors build`` would have put it (parity in docs/text-encoder.md).

The session is made when a name needs embedding and dropped right after
(``with open_text_encoder(...)``): its ~45 MB (int8) a device needs once per
new concept should not stay resident next to the backbone. Importing this
module loads neither ``tokenizers`` nor a session.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import numpy as np
import onnxruntime as ort

from edgecvm.device.int8_kernels import ask_exact_int8
from edgecvm.device.profiles import DeviceProfile
from edgecvm.device.runtime import select_providers
from edgecvm.errors import BadInputError, IntegrityError
from edgecvm.formats.anchors import normalise_rows
from edgecvm.formats.bundle import TEXT_ENCODER, TEXT_ENCODER_CONFIG, TOKENIZER, Bundle
from edgecvm.formats.text_encoder_config import TextEncoderConfig, read_text_encoder_config

INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # what the exported graph takes, int64 (N, T)
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
        self.tokenizer.no_padding()  # tokenizer.json pads to 128: one text per run needs none (module docstring)
        self.tokenizer.enable_truncation(self.config.max_seq_length)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.enable_cpu_mem_arena = False  # a few runs, then the session is dropped: nothing to pool for
        options.log_severity_level = 3
        ask_exact_int8(options)
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
        pooled = np.zeros((len(texts), self.config.dim), dtype=np.float32)
        for row, text in enumerate(texts):  # one per run: see the module docstring
            encoding = self.tokenizer.encode(text)
            feed = {name: np.array([values], dtype=np.int64) for name, values in
                    zip(INPUTS, (encoding.ids, encoding.attention_mask, encoding.type_ids), strict=True)}
            pooled[row] = self.session.run(None, feed)[0][0].mean(axis=0)
        return normalise_rows(pooled) if self.config.normalize else pooled

    def close(self) -> None:
        """Drop the session (its weights and buffers go back to the allocator)."""
        self.session = None

    def __enter__(self) -> TextEncoder:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
