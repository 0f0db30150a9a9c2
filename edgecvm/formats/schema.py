"""Validation of plain-dict configs into dataclasses, refusing typos.

Profiles, recipes and manifests are YAML/JSON written by people or by tools;
an unknown key is an error with a "did you mean" hint instead of being
silently ignored, and a wrong type names the field and the file.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, TypeVar

from edgecvm.errors import BadInputError

T = TypeVar("T")


def _type_ok(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin in (list, tuple):
        (inner, *_) = typing.get_args(annotation) or (Any,)
        return isinstance(value, (list, tuple)) and all(_type_ok(v, inner) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if typing.get_origin(annotation) is typing.Literal:
        return value in typing.get_args(annotation)
    return isinstance(value, annotation)


def from_dict(cls: type[T], data: Any, source: str) -> T:
    """Build dataclass ``cls`` from ``data``; errors name ``source`` (a file path)."""
    if not isinstance(data, dict):
        raise BadInputError(f"{source}: expected a mapping of fields, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (allowed: {', '.join(fields)})"
            raise BadInputError(f"{source}: unknown key {key!r}{hint}")
    kwargs = {}
    for name, field in fields.items():
        if name not in data:
            has_default = field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING
            if not has_default:
                raise BadInputError(f"{source}: missing required key {name!r}")
            continue
        value = data[name]
        if not _type_ok(value, hints[name]):
            raise BadInputError(f"{source}: {name!r} must be {_type_name(hints[name])}, got {value!r}")
        if hints[name] is float:
            value = float(value)
        if typing.get_origin(hints[name]) is tuple:
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    return getattr(annotation, "__name__", str(annotation))
