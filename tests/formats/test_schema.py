"""Config validation refuses typos and wrong types, naming the file."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from edgecvm.errors import BadInputError
from edgecvm.formats.schema import from_dict


@dataclass
class Cfg:
    size: int
    scale: float
    mode: Literal["fast", "slow"] = "fast"
    names: tuple[str, ...] = ()
    extra: dict[str, str] = field(default_factory=dict)
    note: str | None = None


def test_valid_dict_builds_dataclass_with_coercions():
    cfg = from_dict(Cfg, {"size": 3, "scale": 2, "names": ["a", "b"]}, "c.yaml")
    assert cfg == Cfg(size=3, scale=2.0, names=("a", "b"))
    assert isinstance(cfg.scale, float) and isinstance(cfg.names, tuple)


def test_unknown_key_suggests_the_close_one():
    with pytest.raises(BadInputError, match=r"c\.yaml: unknown key 'sise' \(did you mean 'size'\?\)"):
        from_dict(Cfg, {"sise": 3, "scale": 1.0}, "c.yaml")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"scale": 1.0}, "missing required key 'size'"),
        ({"size": "3", "scale": 1.0}, "'size' must be int"),
        ({"size": True, "scale": 1.0}, "'size' must be int"),
        ({"size": 3, "scale": 1.0, "mode": "turbo"}, "'mode' must be one of 'fast', 'slow'"),
        ({"size": 3, "scale": 1.0, "names": [1]}, "'names' must be"),
        ([1, 2], "expected a mapping"),
    ],
)
def test_bad_values_are_named(data, message):
    with pytest.raises(BadInputError, match=message):
        from_dict(Cfg, data, "c.yaml")
