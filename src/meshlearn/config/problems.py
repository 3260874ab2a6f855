"""Turning a pydantic ``ValidationError`` into one readable ``ConfigError``.

Each pydantic error becomes a ``(key, reason, choices)`` problem:

* unknown key  -> ``unknown key; valid keys here: a, b, c; did you mean 'b'?``
* Literal/enum -> ``'x' is not a valid choice; valid: a, b``
* wrong type   -> ``expected float, got 'abc' (str)``
* missing      -> ``required key is missing``
* a validator's ``ConfigError(key, reason)`` -> reported at ``<field>.<key>``, so a check on a
  free-form table (a loss model's parameters, say) names the parameter, not only the table

Keys are dotted paths into the TOML document (``clients[0].lr``). The model
tree is walked alongside the error location so that the valid keys and choices
come from the model itself, and pydantic's internal union tags are hidden.
"""

from __future__ import annotations

import difflib
import enum
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from meshlearn.errors import ConfigError

__all__ = [
    "Problem",
    "problems_from",
    "config_error",
    "format_key",
    "field_key",
    "choices_of",
    "type_name",
]

Problem = tuple[str, str, list[str]]

_NO_ANN = object()  # "we lost track of the annotation at this point"
_TYPE_ERROR_SUFFIXES = ("_type", "_parsing")
_TYPE_ERRORS = {"int_from_float", "model_attributes_type", "is_instance_of"}


# ----------------------------------------------------------------- annotations


def field_key(name: str, field: Any) -> str:
    """The key a field has in TOML: its alias if it has one, else its name."""
    return field.alias or name


def _arms(ann: Any) -> list[Any]:
    """Flatten ``Annotated``, ``Optional`` and ``Union`` into their member types."""
    origin = typing.get_origin(ann)
    if origin is typing.Annotated:
        return _arms(typing.get_args(ann)[0])
    if origin is typing.Union or origin is types.UnionType:
        return [a for arg in typing.get_args(ann) for a in _arms(arg) if a is not type(None)]
    return [ann]


def _is_model(ann: Any) -> bool:
    return isinstance(ann, type) and issubclass(ann, BaseModel)


def _model_fields(ann: Any) -> dict[str, Any]:
    """TOML key -> annotation for every model among the arms of ``ann``."""
    out: dict[str, Any] = {}
    for arm in _arms(ann):
        if _is_model(arm):
            for name, field in arm.model_fields.items():
                out.setdefault(field_key(name, field), field.annotation)
    return out


def _container_item(ann: Any, seg: str | int) -> Any:
    """Element type of a list (int seg) or value type of a dict (str seg)."""
    for arm in _arms(ann):
        origin, args = typing.get_origin(arm), typing.get_args(arm)
        if isinstance(seg, int) and origin in (list, tuple, set, frozenset, Sequence):
            return args[0] if args else Any
        if isinstance(seg, str) and origin in (dict, Mapping):
            return args[1] if len(args) == 2 else Any
    return _NO_ANN


def _step(ann: Any, seg: str | int) -> tuple[Any, bool]:
    """Follow one location segment; returns (new annotation, shown to the user?)."""
    if ann is _NO_ANN:
        return _NO_ANN, not _looks_like_tag(seg)
    fields = _model_fields(ann)
    if isinstance(seg, str) and seg in fields:
        return fields[seg], True
    item = _container_item(ann, seg)
    if item is not _NO_ANN:
        return item, True
    for arm in _arms(ann):
        if _is_model(arm) and _is_tag_of(arm, seg):
            return arm, False  # pydantic's union-member tag
    if _looks_like_tag(seg):
        return ann, False
    return _NO_ANN, True


def _is_tag_of(model: type[BaseModel], seg: str | int) -> bool:
    """Is ``seg`` the class name or a discriminator value (a Literal field value) of ``model``?"""
    if model.__name__ == seg:
        return True
    return any(seg in typing.get_args(f.annotation) for f in model.model_fields.values()
               if typing.get_origin(f.annotation) is typing.Literal)


def _looks_like_tag(seg: str | int) -> bool:
    """Union/validator tags pydantic inserts into locations (``int``, ``function-after[..]``)."""
    if not isinstance(seg, str):
        return False
    return "[" in seg or seg in {"int", "float", "str", "bool", "list", "dict", "none"}


def _walk(model_cls: type[BaseModel], loc: Iterable[str | int]) -> tuple[list[str | int], Any]:
    """The user-visible key parts of ``loc`` and the annotation found at its end."""
    parts: list[str | int] = []
    ann: Any = model_cls
    for seg in loc:
        ann, shown = _step(ann, seg)
        if shown:
            parts.append(seg)
    return parts, ann


def format_key(parts: Iterable[str | int]) -> str:
    """``['clients', 0, 'lr']`` -> ``clients[0].lr``."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def choices_of(ann: Any) -> list[str]:
    """Valid values of a Literal or Enum annotation, as strings."""
    out: list[str] = []
    for arm in _arms(ann):
        if typing.get_origin(arm) is typing.Literal:
            out += [str(v.value if isinstance(v, enum.Enum) else v) for v in typing.get_args(arm)]
        elif isinstance(arm, type) and issubclass(arm, enum.Enum):
            out += [str(m.value) for m in arm]
    return out


def type_name(ann: Any, top: bool = True) -> str:
    """A short human name for an annotation: ``float``, ``list[int]``, ``table (Train)``."""
    if ann is _NO_ANN or ann is Any:
        return "value"
    arms = _arms(ann)
    if len(arms) > 1:
        return " or ".join(type_name(a, top) for a in arms)
    ann, origin, args = arms[0], typing.get_origin(arms[0]), typing.get_args(arms[0])
    if _is_model(ann):
        return f"table ({ann.__name__})" if top else ann.__name__
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin is not None and args:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(type_name(a, False) for a in args)}]"
    return getattr(ann, "__name__", str(ann).replace("typing.", ""))


# -------------------------------------------------------------------- problems


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _unknown_key(model_cls: type[BaseModel], loc: tuple) -> tuple[str, list[str]]:
    _, parent = _walk(model_cls, loc[:-1])
    valid = sorted(_model_fields(parent))
    reason = "unknown key; valid keys here: " + (", ".join(valid) or "(none)")
    close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.6)
    if close:
        reason += f"; did you mean {close[0]!r}?"
    return reason, valid


def _reason(model_cls: type[BaseModel], err: Mapping[str, Any]) -> tuple[str, list[str]]:
    kind, loc, given = err["type"], tuple(err["loc"]), err.get("input")
    if kind == "extra_forbidden":
        return _unknown_key(model_cls, loc)
    if kind == "missing":
        return "required key is missing", []
    _, ann = _walk(model_cls, loc)
    if kind in ("literal_error", "enum"):
        choices = choices_of(ann) or [str(err.get("ctx", {}).get("expected", ""))]
        return f"{_short(given)} is not a valid choice; valid: {', '.join(choices)}", choices
    if kind.endswith(_TYPE_ERROR_SUFFIXES) or kind in _TYPE_ERRORS:
        return f"expected {type_name(ann)}, got {_short(given)} ({type(given).__name__})", []
    if kind == "value_error":  # a validator's own message already says what is wrong and how to fix it
        return str(err["msg"]).removeprefix("Value error, "), []
    return f"{err['msg']} (got {_short(given)})", []


def _union_tag(model_cls: type[BaseModel], err: Mapping[str, Any]) -> Problem:
    """A discriminated union got a bad or no tag: report it at ``<key>.<discriminator>``."""
    parts, ann = _walk(model_cls, err["loc"])
    disc = str(err.get("ctx", {}).get("discriminator", "")).strip("'\"")
    choices = [c for arm in _arms(ann) if _is_model(arm) and disc in arm.model_fields
               for c in choices_of(arm.model_fields[disc].annotation)]
    key = format_key([*parts, disc]) if disc else format_key(parts)
    if err["type"] == "union_tag_not_found":
        return key, f"required key is missing; valid: {', '.join(choices)}", choices
    given = err.get("ctx", {}).get("tag")
    return key, f"{_short(given)} is not a valid choice; valid: {', '.join(choices)}", choices


def _error_key(model_cls: type[BaseModel], loc: tuple, kind: str) -> str:
    """The dotted key of an error; an unknown key is always shown, even if it looks like a tag."""
    if kind == "extra_forbidden" and loc:
        return format_key([*_walk(model_cls, loc[:-1])[0], loc[-1]])
    return format_key(_walk(model_cls, loc)[0])


def _nested(model_cls: type[BaseModel], err: Mapping[str, Any]) -> list[Problem] | None:
    """A validator raised ``ConfigError(key, ...)``: its problems at ``<field>.<key>`` (None otherwise)."""
    cause = err.get("ctx", {}).get("error") if err["type"] == "value_error" else None
    if not isinstance(cause, ConfigError):
        return None
    outer = _error_key(model_cls, tuple(err["loc"]), err["type"])
    listed = f" (valid: {', '.join(cause.choices)})" if cause.choices else ""  # as str(cause) shows them
    inner = getattr(cause, "problems", None) or [(cause.key, cause.reason + listed, cause.choices)]
    return [(".".join(part for part in (outer, key) if part).replace(".[", "["), reason, list(choices))
            for key, reason, choices in inner]


def problems_from(model_cls: type[BaseModel], exc: ValidationError) -> list[Problem]:
    """One ``(key, reason, choices)`` per distinct pydantic error, in pydantic's order."""
    seen: dict[tuple[str, str], Problem] = {}
    for err in exc.errors():
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            key, reason, choices = _union_tag(model_cls, err)
        elif (nested := _nested(model_cls, err)) is not None:
            for key, reason, choices in nested:
                seen.setdefault((key, reason), (key, reason, choices))
            continue
        else:
            reason, choices = _reason(model_cls, err)
            key = _error_key(model_cls, tuple(err["loc"]), err["type"])
        seen.setdefault((key, reason), (key, reason, choices))
    return list(seen.values())


def config_error(problems: list[Problem], source: str = "") -> ConfigError:
    """One ``ConfigError`` listing every problem; ``.problems`` keeps them structured."""
    lines = [f"{key or '(top level)'}: {reason}" for key, reason, _ in problems]
    if len(lines) == 1:
        text = lines[0] + (f" (in {source})" if source else "")
    else:
        text = f"{len(lines)} problems in {source or 'config'}:\n" + "\n".join("  " + ln for ln in lines)
    err = ConfigError("", text)
    if problems:
        err.key, _, err.choices = problems[0]
    err.problems = problems  # type: ignore[attr-defined]
    return err
