"""Writing configs back out as TOML.

* :func:`to_toml` -- the resolved config, ``None`` values omitted (goes into a run dir).
* :func:`dump_with_comments` -- every field preceded by ``# <description>`` from
  ``Field(description=...)``; this is how presets ship a comment on every default.
  Nested models become tables, lists of models arrays of tables; unset optional
  and required-without-default fields appear commented out.
* :func:`diff_from_default` -- only the keys that differ from the defaults.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import re
from pathlib import PurePath
from typing import Any

import tomli_w
from pydantic import BaseModel, ValidationError

from meshlearn.config.problems import choices_of, field_key, type_name
from meshlearn.errors import UsageError

__all__ = ["to_toml", "dump_with_comments", "diff_from_default", "plain"]

_MISSING = object()
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_SCALARS = (bool, int, float, str, dt.datetime, dt.date, dt.time, decimal.Decimal)


def plain(value: Any, drop_none: bool = True) -> Any:
    """Models, enums, paths, tuples and sets -> TOML-friendly dicts, lists and scalars (models through their
    own serializers, so a field that spells None as "none" in a list writes back as it reads)."""
    if isinstance(value, BaseModel):
        value = value.model_dump(by_alias=True)
    if isinstance(value, dict):
        return {str(k): plain(v, drop_none) for k, v in value.items() if v is not None or not drop_none}
    if isinstance(value, (list, tuple)):
        return [plain(v, drop_none) for v in value]
    if isinstance(value, (set, frozenset)):
        return [plain(v, drop_none) for v in sorted(value, key=repr)]
    if isinstance(value, enum.Enum):
        return plain(value.value, drop_none)
    if isinstance(value, PurePath):
        return str(value)
    if value is None or isinstance(value, _SCALARS):
        return value
    return str(value)


def to_toml(model: BaseModel) -> str:
    """The resolved config as TOML text; ``None`` values are left out."""
    return tomli_w.dumps(plain(model))


# ------------------------------------------------------------ commented dump


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else tomli_w.dumps({key: 0}).rsplit(" = ", 1)[0]


def _inline(value: Any) -> str:
    """One-line TOML for a plain value (inline tables and arrays included)."""
    if isinstance(value, dict):
        body = ", ".join(f"{_key(k)} = {_inline(v)}" for k, v in value.items())
        return "{ " + body + " }" if body else "{}"
    if isinstance(value, list):
        return "[" + ", ".join(_inline(v) for v in value) + "]"
    if value is None:
        raise UsageError("TOML has no null: a list or table holds None; use a default or drop the item")
    return tomli_w.dumps({"v": value})[len("v = "):].rstrip("\n")


def _comment(text: str | None) -> list[str]:
    return [f"# {line}".rstrip() for line in (text or "").strip().splitlines()]


def _field_comment(field: Any) -> list[str]:
    lines = _comment(field.description)
    choices = choices_of(field.annotation)
    if choices:
        lines.append("# choices: " + ", ".join(choices))
    return lines


def _table_kind(value: Any) -> str | None:
    """'model', 'models' (array of tables), 'mapping' (dict of models) or None (inline)."""
    if isinstance(value, BaseModel):
        return "model"
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, BaseModel) for v in value):
        return "models"
    if isinstance(value, dict) and value and all(isinstance(v, BaseModel) for v in value.values()):
        return "mapping"
    return None


def _scalar_lines(key: str, field: Any, value: Any) -> list[str]:
    lines = _field_comment(field)
    if value is _MISSING:
        lines.append(f"# {_key(key)} =   # required ({type_name(field.annotation)}), no default")
    elif value is None:
        lines.append(f"# {_key(key)} =   # unset ({type_name(field.annotation)})")
    else:
        lines.append(f"{_key(key)} = {_inline(plain(value))}")
    return lines


def _table_lines(path: tuple[str, ...], field: Any, value: Any, kind: str) -> list[str]:
    lines = [""] + _field_comment(field)
    if kind == "model":
        return lines + _model_lines(value, path, f"[{_header(path)}]")
    if kind == "models":
        for item in value:
            lines += _model_lines(item, path, f"[[{_header(path)}]]")
        return lines
    for name, item in value.items():
        lines += _model_lines(item, path + (str(name),), f"[{_header(path + (str(name),))}]")
    return lines


def _header(path: tuple[str, ...]) -> str:
    return ".".join(_key(p) for p in path)


def _model_lines(model: BaseModel, path: tuple[str, ...], header: str | None) -> list[str]:
    """A table's header, its key/value lines, then its sub-tables (TOML requires that order)."""
    lines = [header] if header else []
    tables: list[str] = []
    serialized = _serialized(model)  # scalars as the model's own serializers write them (e.g. None -> "none")
    for name, field in type(model).model_fields.items():
        key, value = field_key(name, field), getattr(model, name, _MISSING)
        kind = _table_kind(value)
        if kind:
            tables += _table_lines(path + (key,), field, value, kind)
        else:
            lines += _scalar_lines(key, field, serialized.get(key, value) if value is not _MISSING else value)
    return lines + tables


def _serialized(model: BaseModel) -> dict[str, Any]:
    try:
        return model.model_dump(by_alias=True)
    except Exception:  # a partial instance (required fields missing): fall back to the raw values
        return {}


def _instance(model: BaseModel | type[BaseModel]) -> BaseModel:
    """The model itself, its defaults, or (with required fields) a partial instance."""
    if isinstance(model, BaseModel):
        return model
    try:
        return model()
    except ValidationError:  # required fields without defaults: show them commented out
        return model.model_construct()


def dump_with_comments(model: BaseModel | type[BaseModel]) -> str:
    """TOML text with a ``# description`` comment before every field (defaults for a class)."""
    inst = _instance(model)
    head = _comment(type(inst).__doc__) if "__doc__" in type(inst).__dict__ else []
    lines = head + ([""] if head else []) + _model_lines(inst, (), None)
    text = "\n".join(lines).strip("\n") + "\n"
    return re.sub(r"\n{3,}", "\n\n", text)


# ------------------------------------------------------------------------ diff


def _default(field: Any) -> Any:
    if field.is_required():
        return _MISSING
    try:
        return field.get_default(call_default_factory=True)
    except TypeError:  # a default_factory that needs the validated data: treat as no default
        return _MISSING


def diff_from_default(model: BaseModel, defaults: BaseModel | None = None) -> dict[str, Any]:
    """Nested dict of the keys whose values differ from the defaults (or from ``defaults``)."""
    out: dict[str, Any] = {}
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        default = _default(field) if defaults is None else getattr(defaults, name, _MISSING)
        key = field_key(name, field)
        if isinstance(value, BaseModel) and type(default) is type(value):
            sub = diff_from_default(value, default)
            if sub:
                out[key] = sub
        elif default is _MISSING or _differs(value, default):
            out[key] = plain(value, drop_none=False)
    return out


def _differs(value: Any, default: Any) -> bool:
    return plain(value, drop_none=False) != plain(default, drop_none=False)
