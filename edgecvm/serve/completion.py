"""Concept-name completion for the page's concept field: a few names per keystroke, never the whole vocabulary.

Why: a bundle with the ImageNet-21k anchor file has 21,843 names. Sent whole
they are ~400 kB of JSON and 21,843 ``<option>`` elements that a phone's
browser filters on every keystroke; the page asks ``/api/vocabulary?q=`` for
at most ``limit`` matches instead. Prefix matches come from a sorted index
(binary search); the word and substring matches that fill the rest take one
pass over the case-folded names (~10 ms for 21,843 names on the host).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

MAX_LIMIT = 100
_WORD_STARTS = (" ", "-", "(")  # what may precede a word inside a name: "sports car", "t-shirt", "crane (bird)"


class NameCompleter:
    """``complete("lem", 20)``: the names that start with the text, then those with a word that does, then those
    that contain it; case-insensitive, each group shortest first."""

    def __init__(self, names: Sequence[str]) -> None:
        self._names = tuple(names)
        self._folded = tuple(name.casefold() for name in self._names)
        self._order = sorted(range(len(self._names)), key=lambda i: self._folded[i])
        self._sorted = [self._folded[i] for i in self._order]

    def __len__(self) -> int:
        return len(self._names)

    def complete(self, text: str, limit: int) -> list[str]:
        query = " ".join(text.split()).casefold()
        if not query or limit < 1:
            return []
        start = bisect.bisect_left(self._sorted, query)
        end = bisect.bisect_left(self._sorted, query + "\U0010ffff")  # every key that starts with the query
        found = self._ranked(self._order[start:end])
        if len(found) < limit:
            word, inner = [], []
            for i, name in enumerate(self._folded):
                if query in name and not name.startswith(query):
                    (word if any(s + query in name for s in _WORD_STARTS) else inner).append(i)
            found += self._ranked(word) + self._ranked(inner)
        return [self._names[i] for i in found[:limit]]

    def _ranked(self, rows: list[int]) -> list[int]:
        return sorted(rows, key=lambda i: (len(self._folded[i]), self._folded[i]))
