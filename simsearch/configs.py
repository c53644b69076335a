"""Settings and records as plain dicts (JSON, checkpoints) and back: one policy for every
dataclass simsearch stores (model, training, preprocessing and post-processing configs, and
the records in an index's ``meta.json``).

The policy: a key this version does not know is ignored (a file written by a newer simsearch
may carry settings that have no meaning here), and a key that is missing takes the field's
default (a file written before the setting existed). Nested dataclass fields are converted
recursively. Validation is the dataclass's own ``__post_init__``.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, TypeVar

T = TypeVar("T")


def to_dict(obj: Any) -> dict:
    """A dataclass instance → a JSON-ready dict (nested dataclasses too)."""
    return dataclasses.asdict(obj)


def from_dict(cls: type[T], data: dict) -> T:
    """A dict → ``cls`` (a dataclass); unknown keys ignored, missing keys defaulted."""
    hints = typing.get_type_hints(cls)
    kw = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name not in data or not f.init:
            continue
        value = data[f.name]
        sub = _dataclass_in(hints.get(f.name))
        if sub is not None and isinstance(value, dict):
            value = from_dict(sub, value)
        kw[f.name] = value
    return cls(**kw)


def _dataclass_in(hint: Any) -> type | None:
    """The dataclass named by a field's type hint (``X`` or ``X | None``), if any."""
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return hint
    for arg in typing.get_args(hint):
        if dataclasses.is_dataclass(arg) and isinstance(arg, type):
            return arg
    return None
