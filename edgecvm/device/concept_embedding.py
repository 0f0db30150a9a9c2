"""How a concept name becomes an anchor: prompt-template ensembling plus an optional description.

One function for both places anchors are made, so they cannot drift apart:
``edgecvm anchors build`` (sentence-transformers in torch, on a workstation)
and a device teaching a name its anchor file lacks (the bundle's ONNX text
encoder, text_encoder.py). Only the ``encode`` callable differs.

Templates (as in CLIP's zero-shot classifiers): each name is embedded inside
several "a photo of a {}." sentences, the embeddings are averaged and
re-normalised, which moves the vector towards the *visual* sense of the word
and away from the quirks of any one phrasing. A description, when given, is
embedded as "name: description" and added with weight DESCRIPTION_WEIGHT
before the final re-normalisation: it separates homonyms ("crane" the bird vs.
the machine) without drowning the name, which is what a user will type later.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from edgecvm.formats.anchors import normalise_rows
from edgecvm.reporting import ProgressFactory, silent

SLOT = "{}"  # where the concept name goes in a template
DEFAULT_TEMPLATES = (
    "a photo of a {}.",
    "a close-up photo of a {}.",
    "a blurry photo of a {}.",
    "a low resolution photo of a {}.",
    "a photo of the small {}.",
    "a photo of the large {}.",
    "a cropped photo of a {}.",
)
NO_TEMPLATES = (SLOT,)  # the bare name
DESCRIPTION_WEIGHT = 0.5  # description embedding's weight relative to the (unit) template mean
BATCH = 64  # names per encoder call

# texts -> (len(texts), D) float32 unit rows
Encode = Callable[[Sequence[str]], np.ndarray]


def embed_names(names: Sequence[str], descriptions: Sequence[str], encode: Encode, templates: Sequence[str],
                description_weight: float = DESCRIPTION_WEIGHT, progress: ProgressFactory = silent) -> np.ndarray:
    """(N, D) unit vectors: mean over templates, plus ``description_weight`` x the description's embedding.

    ``descriptions[i]`` is "" for a name without one.
    """
    if len(descriptions) != len(names):
        raise ValueError(f"{len(names)} names but {len(descriptions)} descriptions")
    chunks = []
    with progress(len(names), "embedding concepts", "concepts") as bar:
        for start in range(0, len(names), BATCH):
            chunk, glosses = names[start : start + BATCH], descriptions[start : start + BATCH]
            # str.replace, not str.format: a name like "C{++}" must not be read as a format field.
            sentences = [t.replace(SLOT, name) for name in chunk for t in templates]
            vecs = normalise_rows(np.asarray(encode(sentences)).reshape(len(chunk), len(templates), -1).mean(axis=1))
            described = [i for i, gloss in enumerate(glosses) if gloss]
            if described:
                vecs[described] += description_weight * np.asarray(
                    encode([f"{chunk[i]}: {glosses[i]}" for i in described]))
            chunks.append(normalise_rows(vecs))
            bar.update(len(chunk))
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), dtype=np.float32)
