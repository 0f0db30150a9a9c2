"""Regenerate the shipped concept lists from the raw class lists (a maintainer tool, run once).

    .venv/bin/python anchors/make_concept_lists.py ../shared/data

writes ``edgecvm/resources/anchors/tiny-imagenet-200.tsv`` (from the Tiny-ImageNet zip's
``wnids.txt`` + ``words.txt``), ``edgecvm/resources/anchors/imagenet-1k.tsv`` (from
``imagenet-1k-classes.tsv``) and ``edgecvm/resources/anchors/imagenet-21k.tsv`` (from
``imagenet-21k-concepts.tsv``). All keep the source's order, because line k of a
list is label k of the dataset / output k of the classifier / row k of the source
(the 21k evaluation finds each concept's WordNet id by that row).

Concept names must be unique case-insensitively, but ImageNet-1k's first
lemmas are not: "crane" (bird, machine), "maillot" (tights, bathing suit) and
"Cardigan" (corgi) vs "cardigan" (jacket). Every member of a clashing group
gets a qualifier in parentheses: its second lemma when WordNet has one, else a
fixed word taken from its gloss (QUALIFIERS, keyed by wnid, so the result does
not depend on anything but the inputs). The 21k list has lemmas but no glosses,
and 3,243 of its rows share a first lemma with another row: each that has a second
lemma gets it as qualifier (``cell (jail cell)``), and a name that still clashes
gets its WordNet id (``crane (n02012849)``; 1,277 rows).
"""

from __future__ import annotations

import csv
import sys
import zipfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HERE = REPO / "edgecvm" / "resources" / "anchors"
TINY_ROOT = "tiny-imagenet-200"
QUALIFIERS = {  # wnid -> gloss word, for clashing classes that have a single lemma
    "n02012849": "bird",  # crane: large long-necked wading bird
    "n03126707": "machine",  # crane: lifts and moves heavy objects
    "n02963159": "knitted jacket",  # cardigan
    "n03710637": "tights",  # maillot: tights for dancers or gymnasts
}


def tiny_imagenet_lines(zip_path: Path) -> list[str]:
    with zipfile.ZipFile(zip_path) as zf:
        wnids = zf.read(f"{TINY_ROOT}/wnids.txt").decode().split()
        words = dict(line.split("\t", 1) for line in zf.read(f"{TINY_ROOT}/words.txt").decode().splitlines() if line)
    header = [
        "# Tiny-ImageNet-200 classes; line k (not counting comments) = class k = line k of the zip's wnids.txt.",
        "# name = first synonym in words.txt. Regenerate: anchors/make_concept_lists.py",
    ]
    return header + [words[w].split(",")[0].strip() for w in wnids]


def imagenet_1k_lines(tsv_path: Path) -> list[str]:
    with open(tsv_path, encoding="utf-8") as fh:
        rows = sorted(csv.DictReader(fh, delimiter="\t"), key=lambda r: int(r["index"]))
    if [int(r["index"]) for r in rows] != list(range(1000)):
        raise SystemExit(f"{tsv_path}: expected indices 0..999")
    lemmas = [[lemma.strip() for lemma in r["lemmas"].split(",")] for r in rows]
    clashes = Counter(lem[0].casefold() for lem in lemmas)
    header = [
        "# ImageNet-1k classes in standard classifier index order (line k = output k of the classifier).",
        "# name<TAB>WordNet definition; clashing first lemmas get a qualifier: the second lemma, else a gloss word.",
    ]
    lines = []
    for row, lem in zip(rows, lemmas, strict=True):
        name = lem[0]
        if clashes[name.casefold()] > 1:
            name = f"{name} ({lem[1] if len(lem) > 1 else QUALIFIERS[row['wnid']]})"
        lines.append(f"{name}\t{' '.join(row['definition'].split())}")
    return header + lines


def imagenet_21k_lines(tsv_path: Path) -> list[str]:
    with open(tsv_path, encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    lemmas = [[lemma.strip() for lemma in r["lemmas"].split(",")] for r in rows]
    clashes = Counter(lem[0].casefold() for lem in lemmas)
    names = [f"{lem[0]} ({lem[1]})" if clashes[lem[0].casefold()] > 1 and len(lem) > 1 else lem[0] for lem in lemmas]
    left = Counter(name.casefold() for name in names)
    names = [f"{lem[0]} ({row['wnid']})" if left[name.casefold()] > 1 else name
             for row, lem, name in zip(rows, lemmas, names, strict=True)]
    header = [
        f"# The {len(rows):,} WordNet concepts of ImageNet-21k; line k (not counting comments) = row k of "
        "imagenet-21k-concepts.tsv.",
        "# name = first lemma; clashing first lemmas get a qualifier: the second lemma, then the WordNet id if "
        "still clashing.",
    ]
    return header + names


def main(data_dir: Path) -> None:
    outputs = {
        HERE / "tiny-imagenet-200.tsv": tiny_imagenet_lines(data_dir / "tiny-imagenet-200-subset.zip"),
        HERE / "imagenet-1k.tsv": imagenet_1k_lines(data_dir / "imagenet-1k-classes.tsv"),
        HERE / "imagenet-21k.tsv": imagenet_21k_lines(data_dir / "imagenet-21k-concepts.tsv"),
    }
    for path, lines in outputs.items():
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"wrote {path} ({len(lines)} lines)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO.parent / "shared" / "data")
