"""Concept lists: the text files that name what a device can learn.

One concept per line, ``name`` or ``name<TAB>description``; blank lines and
``#`` comments are ignored. Names must be unique (case-insensitively): two
anchors with one name would make a prediction ambiguous.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgecvm.errors import BadInputError


@dataclass(frozen=True)
class Concept:
    name: str
    description: str = ""


def parse_concepts(text: str, source: str) -> list[Concept]:
    concepts: list[Concept] = []
    seen: dict[str, int] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, _, description = line.partition("\t")
        name = " ".join(name.split())
        if not name:
            raise BadInputError(f"{source}:{lineno}: empty concept name")
        key = name.casefold()
        if key in seen:
            raise BadInputError(f"{source}:{lineno}: duplicate concept {name!r} (first on line {seen[key]})")
        seen[key] = lineno
        concepts.append(Concept(name, description.strip()))
    if not concepts:
        raise BadInputError(f"{source}: no concepts; write one concept per line (`name` or `name<TAB>description`)")
    return concepts


def read_concepts(path: str | Path) -> list[Concept]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInputError(f"{path}: concept list not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{path}: cannot read concept list ({exc})") from None
    return parse_concepts(text, str(path))
