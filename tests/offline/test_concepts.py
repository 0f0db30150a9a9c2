"""Concept lists: parsing, and one-line errors naming the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecvm import resources
from edgecvm.errors import BadInputError
from edgecvm.offline.concepts import Concept, parse_concepts, read_concepts


def test_names_descriptions_comments_and_blank_lines() -> None:
    text = "# my concepts\n\ncoffee  mug\nEgyptian cat\ta domestic cat\twith extra tab\n   \n  # indented comment\nsock\t\n"
    assert parse_concepts(text, "list.tsv") == [
        Concept("coffee mug"),
        Concept("Egyptian cat", "a domestic cat with extra tab"),
        Concept("sock"),
    ]


def test_byte_order_mark_is_not_part_of_the_first_name(tmp_path: Path) -> None:
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufefflemon\nlime\n".encode())
    assert [c.name for c in read_concepts(path)] == ["lemon", "lime"]


def test_duplicate_names_are_refused_case_insensitively_with_both_lines() -> None:
    with pytest.raises(BadInputError, match=r"list\.tsv:4: duplicate concept 'Crane' \(also on line 2\)"):
        parse_concepts("# birds\ncrane\nheron\nCrane\tthe machine\n", "list.tsv")


def test_empty_name_before_a_tab_names_the_line() -> None:
    with pytest.raises(BadInputError, match=r"list\.tsv:2: empty concept name"):
        parse_concepts("lemon\n\ta description without a name\n", "list.tsv")


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n  \n"])
def test_a_list_without_concepts_is_refused(text: str) -> None:
    with pytest.raises(BadInputError, match=r"empty\.txt: no concepts"):
        parse_concepts(text, "empty.txt")


def test_missing_and_undecodable_files(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="nope.txt: concept list not found"):
        read_concepts(tmp_path / "nope.txt")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(BadInputError, match="latin1.txt: cannot read concept list .* save it as UTF-8"):
        read_concepts(latin1)


def test_shipped_lists_parse_with_expected_sizes() -> None:
    anchors_dir = resources.anchors_file("")
    tiny = read_concepts(anchors_dir / "tiny-imagenet-200.tsv")
    imagenet = read_concepts(anchors_dir / "imagenet-1k.tsv")
    assert len(tiny) == 200 and len(imagenet) == 1000
    assert imagenet[0] == Concept("tench", imagenet[0].description) and imagenet[0].description
    assert {"crane (bird)", "crane (machine)", "maillot (tights)", "maillot (tank suit)"} <= {c.name for c in imagenet}
