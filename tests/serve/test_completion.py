"""Concept-name completion: which names a few typed letters bring up, and in what order."""

from __future__ import annotations

from edgecvm import resources
from edgecvm.offline.concepts import read_concepts
from edgecvm.serve.completion import NameCompleter

NAMES = ("sports car", "car", "Carbonara", "cardigan (knitted jacket)", "boxcar", "t-shirt", "crane (bird)",
         "racer", "scar")


def test_prefix_then_word_then_substring_matches_each_shortest_first():
    completer = NameCompleter(NAMES)
    assert completer.complete("car", 10) == ["car", "Carbonara", "cardigan (knitted jacket)", "sports car",
                                             "scar", "boxcar"]
    assert completer.complete("  CAR ", 2) == ["car", "Carbonara"]  # case and spaces do not matter; at most limit
    assert completer.complete("shirt", 5) == ["t-shirt"] and completer.complete("bird", 5) == ["crane (bird)"]


def test_nothing_to_complete():
    completer = NameCompleter(NAMES)
    assert completer.complete("", 10) == [] and completer.complete("   ", 10) == []
    assert completer.complete("zebra", 10) == [] and completer.complete("car", 0) == []
    assert len(completer) == len(NAMES)


def test_the_21k_vocabulary_answers_with_a_handful_of_names():
    names = [c.name for c in read_concepts(resources.anchors_file("imagenet-21k.tsv"))]
    completer = NameCompleter(names)
    found = completer.complete("tabby", 20)
    assert 0 < len(found) <= 20 and found[0].casefold().startswith("tabby")
    assert all("tabby" in name.casefold() for name in found)
    assert len(completer.complete("a", 20)) == 20  # a one-letter prefix matches thousands; 20 come back
