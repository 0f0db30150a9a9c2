"""Concept lists: the text files that name what a device can learn.

One concept per line, ``name`` or ``name<TAB>description``; blank lines and
``#`` comments are ignored; runs of spaces in a name collapse to one. Names
must be unique case-insensitively: two anchors answering to one name would
make a prediction (and `--concept NAME` on the device) ambiguous.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgecvm.errors import BadInputError

_FORMAT = "one concept per line, `name` or `name<TAB>description`"


@dataclass(frozen=True)
class Concept:
    name: str
    description: str = ""  # optional gloss, mixed into the anchor to separate homonyms


def parse_concepts(text: str, source: str) -> list[Concept]:
    """Parse a concept list; ``source`` (the file name) prefixes every error."""
    concepts: list[Concept] = []
    first_line: dict[str, int] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, _, description = raw.partition("\t")
        name = " ".join(name.split())
        if not name:
            raise BadInputError(f"{source}:{lineno}: empty concept name; {_FORMAT}")
        key = name.casefold()
        if key in first_line:
            raise BadInputError(f"{source}:{lineno}: duplicate concept {name!r} (also on line {first_line[key]}); "
                                "remove one or make the names distinct, e.g. `crane (bird)`")
        first_line[key] = lineno
        concepts.append(Concept(name, " ".join(description.split())))
    if not concepts:
        raise BadInputError(f"{source}: no concepts in the list; write {_FORMAT}")
    return concepts


def read_concepts(path: str | Path) -> list[Concept]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: lists saved by Windows editors start with a BOM
    except FileNotFoundError:
        raise BadInputError(f"{path}: concept list not found; pass a text file with {_FORMAT}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{path}: cannot read concept list ({exc}); save it as UTF-8 text") from None
    return parse_concepts(text, str(path))
