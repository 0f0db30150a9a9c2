"""Concept names -> anchor vectors: the one place names are embedded into an anchor file's concept space.

Anchors are built by prompt-template ensembling (as in CLIP's zero-shot
classifiers): each concept name is embedded inside several "a photo of a {}."
sentences, the embeddings are averaged and re-normalised, which moves the
vector towards the *visual* sense of the word and away from the quirks of any
one phrasing. A description, when the concept list gives one, is embedded as
"name: description" and added with weight DESCRIPTION_WEIGHT before the final
re-normalisation: it separates homonyms ("crane" the bird vs. the machine)
without drowning the name, which is what a user will type later.

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

from edgecvm.errors import BadInputError, OfflineModelError
from edgecvm.formats.anchors import AnchorSet, normalise_rows
from edgecvm.offline.concepts import Concept
from edgecvm.offline.text_encoder import DEFAULT_MODEL_ID, PROBE_MATCH, TextEncoder
from edgecvm.reporting import ProgressFactory, silent

SLOT = "{}"  # where the concept name goes in a template
DESCRIPTION_WEIGHT = 0.5  # description embedding's weight relative to the (unit) template mean


class NameEncoder(Protocol):
    """What embeds text (``TextEncoder``): unit rows, and a fingerprint telling models apart."""

    model_id: str
    dim: int

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray: ...

    def probe(self) -> np.ndarray: ...


def embed_concepts(concepts: Sequence[Concept], encoder: NameEncoder, templates: tuple[str, ...],
                   batch: int = 64, progress: ProgressFactory = silent) -> np.ndarray:
    """(N, D) unit vectors: mean over templates, plus DESCRIPTION_WEIGHT x the description's embedding."""
    out = np.zeros((len(concepts), encoder.dim), dtype=np.float32)
    with progress(len(concepts), "embedding concepts", "concepts") as bar:
        for start in range(0, len(concepts), batch):
            chunk = concepts[start : start + batch]
            # str.replace, not str.format: a name like "C{++}" must not be read as a format field.
            sentences = [t.replace(SLOT, c.name) for c in chunk for t in templates]
            vecs = normalise_rows(encoder.encode(sentences).reshape(len(chunk), len(templates), -1).mean(axis=1))
            described = [i for i, c in enumerate(chunk) if c.description]
            if described:
                texts = [f"{chunk[i].name}: {chunk[i].description}" for i in described]
                vecs[described] += DESCRIPTION_WEIGHT * encoder.encode(texts)
            out[start : start + len(chunk)] = normalise_rows(vecs)
            bar.update(len(chunk))
    return out


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
    return AnchorSet(base.names + tuple(c.name for c in concepts), np.vstack([base.vectors, vectors]),
                     base.model, base.templates, base.dtype, base.model_probe)


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
