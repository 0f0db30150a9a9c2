"""Concept names -> anchor vectors with sentence-transformers (a workstation, or eval on folder names).

How a name is embedded (prompt templates, description weighting) is
``edgecvm.device.concept_embedding``, shared with the device's text encoder.

New names join an existing anchor file only if they are embedded by the very
model and templates that built it (``extend_anchors``), otherwise their cosines
to the old anchors mean nothing. ``anchors_covering`` is what a caller with a
list of names (``edgecvm eval --data`` on folder names) uses: it picks the
encoder, so another text encoder plugs in there alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from edgecvm.device.concept_embedding import embed_names
from edgecvm.errors import BadInputError, OfflineModelError
from edgecvm.formats.anchors import AnchorSet
from edgecvm.offline.concepts import Concept
from edgecvm.offline.text_encoder import DEFAULT_MODEL_ID, PROBE_MATCH, TextEncoder
from edgecvm.reporting import ProgressFactory, silent


class NameEncoder(Protocol):
    """What embeds text (``TextEncoder``): unit rows, and a fingerprint telling models apart."""

    model_id: str
    dim: int

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray: ...

    def probe(self) -> np.ndarray: ...


def embed_concepts(concepts: Sequence[Concept], encoder: NameEncoder, templates: tuple[str, ...],
                   progress: ProgressFactory = silent) -> np.ndarray:
    """(N, D) unit vectors of the concepts, their descriptions weighted in (concept_embedding.embed_names)."""
    return embed_names([c.name for c in concepts], [c.description for c in concepts], encoder.encode, templates,
                       progress=progress)


def check_same_model(base: AnchorSet, encoder: NameEncoder, file: str | Path) -> None:
    """Refuse to mix two models' vectors in one concept space: their cosines would mean nothing."""
    fix = (f"pass the model {file} was built with (`--model FOLDER`), or rebuild all anchors with "
           "`edgecvm anchors build`")
    if encoder.dim != base.dim:
        raise BadInputError(f"{file}: anchors are {base.dim}-d ({base.model}) but --model gives "
                            f"{encoder.dim}-d vectors ({encoder.model_id}); {fix}")
    same = (float(base.model_probe @ encoder.probe()) >= PROBE_MATCH if base.model_probe is not None
            else encoder.model_id == base.model)
    if not same:
        raise BadInputError(f"{file}: built with model {base.model}, but --model gives a different model "
                            f"({encoder.model_id}); {fix}")


def extend_anchors(base: AnchorSet, concepts: Sequence[Concept], encoder: NameEncoder, file: str | Path,
                   progress: ProgressFactory = silent) -> AnchorSet:
    """``base``'s concepts followed by ``concepts``, embedded with ``base``'s templates by the same model."""
    check_same_model(base, encoder, file)
    vectors = embed_concepts(concepts, encoder, base.templates, progress=progress)
    return base.extended(AnchorSet(tuple(c.name for c in concepts), vectors, base.model, base.templates, base.dtype))


def anchors_covering(base: AnchorSet, names: Sequence[str], file: str | Path,
                     progress: ProgressFactory = silent) -> AnchorSet:
    """``base`` plus an anchor for every name it lacks (matched as ``AnchorSet.index_of`` does), in memory.

    ``base`` itself when it lacks none, without loading any model. ``file`` names
    ``base`` in messages.
    """
    known = {name.casefold() for name in base.names}
    missing = [name for name in dict.fromkeys(" ".join(n.split()) for n in names) if name.casefold() not in known]
    if not missing:
        return base
    return extend_anchors(base, [Concept(name) for name in missing], _encoder_for(base, missing, file), file,
                          progress)


def _encoder_for(base: AnchorSet, missing: Sequence[str], file: str | Path) -> NameEncoder:
    """The model that built ``base``, or an error saying what to install or which anchor file to pass."""
    lacking = (f"{len(missing)} concept name(s) are not in {file} ({', '.join(repr(n) for n in missing[:3])}"
               f"{', ...' if len(missing) > 3 else ''})")

    def extend(model: str = "") -> str:
        return f"`edgecvm anchors extend {file} --concepts NAMES.txt{model} --out FILE`, then pass --anchors FILE"

    if base.model != DEFAULT_MODEL_ID:
        raise BadInputError(f"{lacking}, which was built with model {base.model}: embed them with "
                            f"{extend(' --model FOLDER')}")
    try:
        return TextEncoder()
    except (ModuleNotFoundError, OfflineModelError):
        raise BadInputError(f"{lacking}; embedding them needs the export extra: pip install 'edgecvm[export]', "
                            f"or make an anchor file with them elsewhere ({extend()})") from None
