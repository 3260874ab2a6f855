"""Typed records in a message's meta: one frozen dataclass <-> flat JSON scalars.

A protocol that sends instructions (how to train a round, how to distil) declares them as a frozen
dataclass subclassing ``MetaRecord`` with scalar fields (int, float, bool, str, a Literal, or an
optional of those) and a ``problems()`` method naming the rules a value breaks:

    @dataclass(frozen=True)
    class LocalTraining(MetaRecord):
        epochs: int
        lr: float

        def problems(self) -> list[str]:
            return [rule for rule, ok in (("epochs >= 0", self.epochs >= 0), ("lr > 0", self.lr > 0)) if not ok]

    meta = {"round": 3, **LocalTraining(1, 0.05).to_meta()}      # sender
    training = LocalTraining.from_meta(meta)                       # receiver: ProtocolError if malformed

``to_meta(prefix)`` writes the fields in declaration order (``None`` values are left out);
``from_meta(meta, prefix)`` reads them back and raises ``ProtocolError`` when one is missing, of the
wrong type or breaks a rule, so a peer's malformed instruction never reaches a task. Building a
record with bad values locally raises ``UsageError`` (the caller's mistake, not a peer's).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from typing import Any, Literal, Mapping, TypeVar

from meshlearn.errors import ProtocolError, UsageError

__all__ = ["MetaRecord"]

R = TypeVar("R", bound="MetaRecord")
_MISSING = object()


@dataclasses.dataclass(frozen=True)
class MetaRecord:
    """Base of typed meta records; subclasses are frozen dataclasses of scalars."""

    def problems(self) -> list[str]:
        """The rules this record's values break (empty when valid); subclasses override."""
        return []

    def __post_init__(self) -> None:
        broken = self.problems()
        if broken:
            raise UsageError(f"{type(self).__name__} breaks: {', '.join(broken)}")

    def to_meta(self, prefix: str = "") -> dict[str, Any]:
        """The fields as ``{prefix + name: value}`` in declaration order, ``None`` values left out."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[prefix + f.name] = value
        return out

    @classmethod
    def from_meta(cls: type[R], meta: Mapping[str, Any], prefix: str = "") -> R:
        """Read a record back from a peer's meta; ProtocolError names the first bad field."""
        hints = _field_types(cls)
        values = {}
        for f in dataclasses.fields(cls):
            key = prefix + f.name
            raw = meta.get(key, _MISSING)
            if raw is _MISSING:
                if f.default is dataclasses.MISSING:
                    raise ProtocolError(f"meta lacks {key!r}")
                continue
            values[f.name] = _checked(key, raw, hints[f.name])
        try:
            return cls(**values)
        except UsageError as exc:
            raise ProtocolError(f"bad {cls.__name__} in meta: {exc}") from None


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _checked(key: str, value: Any, hint: Any) -> Any:
    """``value`` if it fits ``hint`` (a float field takes an int and returns a float), else ProtocolError."""
    arms = _arms(hint)
    if value is None and type(None) in arms:
        return None
    for arm in arms:
        if typing.get_origin(arm) is Literal and value in typing.get_args(arm):
            return value
        if arm is bool and isinstance(value, bool):
            return value
        if arm is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if arm is float and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        if arm is str and isinstance(value, str):
            return value
    raise ProtocolError(f"meta {key!r} must be {_describe(arms)}, got {value!r}")


def _arms(hint: Any) -> tuple[Any, ...]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _describe(arms: tuple[Any, ...]) -> str:
    names = []
    for arm in arms:
        if typing.get_origin(arm) is Literal:
            names.append("one of " + ", ".join(map(repr, typing.get_args(arm))))
        else:
            names.append("null" if arm is type(None) else ("a finite number" if arm is float else f"a {arm.__name__}"))
    return " or ".join(names)
