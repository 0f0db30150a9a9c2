"""Zero-shot over a broad vocabulary: is an image's own concept the answer (top-1) or among the top 5 when the
device answers among every concept of an anchor file, e.g. the 21,843 of ImageNet-21k?

Which anchor is an image's own: by WordNet id when a list gives the anchor
file's ids (row k of the list = anchor k; ``imagenet-21k-concepts.tsv`` for
``imagenet-21k.anchors.npz``), the image's class folder being one
(Tiny-ImageNet's ``val/<wnid>/``); else by name. An image whose concept is not
in the file counts as wrong, so the figure is over every test image.
Answers come from ``Learner.predict_features(vocab="all")``, the device's
zero-shot decision, a chunk of images at a time: one 10,000 x 21,843 score
matrix would be 870 MB.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecvm.errors import BadInputError
from edgecvm.eval.scenarios import TestSet
from edgecvm.formats.anchors import AnchorSet
from edgecvm.formats.head_file import HeadParams
from edgecvm.learning.learner import Learner, LearnerConfig

TOP_KS = (1, 5)
CHUNK = 256  # images scored at once: a 256 x 21,843 float32 score matrix is 22 MB


@dataclass(frozen=True)
class VocabularyResult:
    anchors: str  # what the answers were among (a file name)
    concepts: int  # concepts in that file
    images: int
    covered: int  # images whose own concept is in the file (the most that can be right)
    matched_by: str  # "WordNet id" or "name"
    accuracy: dict[int, float]  # k -> fraction of images whose concept is among the top k
    missing: tuple[str, ...]  # dataset concepts that are not in the file

    def as_dict(self) -> dict[str, object]:
        return {**self.__dict__, "accuracy": {f"top_{k}": v for k, v in self.accuracy.items()},
                "missing": list(self.missing)}


def read_wordnet_ids(path: str | Path) -> tuple[str, ...]:
    """The column headed ``wnid`` of a TSV, one row per anchor in the anchor file's order
    (imagenet-21k-concepts.tsv, imagenet-1k-classes.tsv)."""
    path = Path(path)
    try:
        lines = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{path}: cannot read the WordNet id list ({exc})") from None
    if not lines or "wnid" not in lines[0]:
        raise BadInputError(f"{path}: expected a TSV with a column headed 'wnid' (one WordNet id per anchor)")
    column = lines[0].index("wnid")
    if any(len(fields) <= column for fields in lines[1:]):
        raise BadInputError(f"{path}: a row has no wnid field")
    ids = tuple(fields[column].strip() for fields in lines[1:])
    if len(set(ids)) != len(ids):
        raise BadInputError(f"{path}: a WordNet id appears twice; each row is one anchor")
    return ids


def anchor_rows(concepts: Sequence[str], anchors: AnchorSet, concept_ids: Mapping[str, str] | None = None,
                anchor_ids: Sequence[str] | None = None) -> np.ndarray:
    """Anchor row of each dataset concept, -1 when it is not in the file (matched by id when both ids are given)."""
    if anchor_ids is None or concept_ids is None:
        folded = {name.casefold(): i for i, name in enumerate(anchors.names)}
        return np.array([folded.get(c.casefold(), -1) for c in concepts], dtype=np.int64)
    if len(anchor_ids) != len(anchors):
        raise BadInputError(f"{len(anchor_ids)} WordNet ids for {len(anchors)} anchors: the id list must be the "
                            "one the anchor file's concept list was made from")
    row_of = {wnid: i for i, wnid in enumerate(anchor_ids)}
    return np.array([row_of.get(concept_ids.get(c, ""), -1) for c in concepts], dtype=np.int64)


def zero_shot_over(head: HeadParams, anchors: AnchorSet, label: str, test: TestSet, concepts: Sequence[str],
                   rows: np.ndarray, matched_by: str) -> VocabularyResult:
    """Top-k accuracy of the untaught device over every anchor of ``anchors``; ``rows`` from ``anchor_rows``."""
    if not (rows >= 0).any():
        raise BadInputError(f"{label}: none of the {len(concepts)} dataset concepts is in the anchor file "
                            f"(matched by {matched_by})")
    learner = Learner(head, anchors, LearnerConfig())
    truth = rows[test.labels]
    hits = dict.fromkeys(TOP_KS, 0)
    for start in range(0, len(truth), CHUNK):
        predictions = learner.predict_features(test.features[start : start + CHUNK], top_k=max(TOP_KS), vocab="all")
        for prediction, row in zip(predictions, truth[start : start + CHUNK], strict=True):
            ranked = [name for name, _ in prediction.top_k]
            own = anchors.names[row] if row >= 0 else None
            for k in TOP_KS:
                hits[k] += own in ranked[:k]
    missing = tuple(c for c, r in zip(concepts, rows, strict=True) if r < 0)
    return VocabularyResult(label, len(anchors), len(truth), int((truth >= 0).sum()), matched_by,
                            {k: hits[k] / len(truth) for k in TOP_KS}, missing)


def table(results: Sequence[VocabularyResult]) -> str:
    """Markdown table, one row per anchor file."""
    rows = ["| answers among | concepts | top-1 | top-5 | images (concept in the file) | matched by |",
            "|---|---:|---:|---:|---:|---|"]
    rows += [f"| {r.anchors} | {r.concepts:,} | {100 * r.accuracy[1]:.1f} | {100 * r.accuracy[5]:.1f} | "
             f"{r.images:,} ({r.covered:,}) | {r.matched_by} |" for r in results]
    return "\n".join(rows)
