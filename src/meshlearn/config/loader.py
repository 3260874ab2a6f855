"""Loading a config: preset dict <- TOML file <- ``--set`` overrides -> validated model.

Works for any pydantic v2 model tree (``extra="forbid"`` recommended so typos
are reported). Every failure is a single :class:`~meshlearn.errors.ConfigError`
whose ``.problems`` lists ``(key, reason, choices)`` tuples.

Writing configs back out (``to_toml``, ``dump_with_comments``,
``diff_from_default``) lives in :mod:`meshlearn.config.dump` and is re-exported
here.
"""

from __future__ import annotations

import copy
import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from meshlearn.config.dump import diff_from_default, dump_with_comments, plain, to_toml
from meshlearn.config.problems import config_error, format_key, problems_from
from meshlearn.errors import ConfigError

__all__ = [
    "load_config",
    "validate_config",
    "read_toml",
    "deep_merge",
    "apply_overrides",
    "parse_value",
    "to_toml",
    "dump_with_comments",
    "diff_from_default",
]

M = TypeVar("M", bound=BaseModel)

_SET_HINT = "write overrides as --set a.b=VALUE (e.g. --set train.lr=0.05, --set clients[0].name=x)"
_PART = re.compile(r"^([^\[\]]*)((?:\[\d+\])*)$")


def load_config(
    model_cls: type[M],
    path: str | Path | None,
    overrides: Iterable[str] = (),
    base: Mapping[str, Any] | None = None,
) -> M:
    """Merge ``base`` <- TOML file at ``path`` <- ``overrides`` and validate as ``model_cls``."""
    data = copy.deepcopy(dict(base or {}))
    if path is not None:
        data = deep_merge(data, read_toml(path))
    overrides = list(overrides)
    data = apply_overrides(data, overrides, defaults=_defaults_tree(model_cls))
    source = str(path) if path is not None else ""
    return validate_config(model_cls, data, source=source, overrides=overrides)


def _defaults_tree(model_cls: type[BaseModel]) -> dict[str, Any]:
    """The model's defaults as plain data, so ``--set clients[1].lr=..`` can edit a default list."""
    try:
        return plain(model_cls())
    except Exception:  # required fields: defaults are only known per sub-tree
        return {}


def validate_config(
    model_cls: type[M],
    data: Mapping[str, Any],
    *,
    source: str = "",
    overrides: Iterable[str] = (),
) -> M:
    """Validate ``data``; any pydantic error becomes one ``ConfigError``."""
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        problems = problems_from(model_cls, exc)
        set_keys = [_override_key(item) for item in overrides]
        problems = [(k, _mark_override(k, r, set_keys), c) for k, r, c in problems]
        raise config_error(problems, source) from None


def _related(key: str, prefix: str) -> bool:
    return key == prefix or key.startswith((prefix + ".", prefix + "["))


def _mark_override(key: str, reason: str, set_keys: list[str]) -> str:
    for set_key in set_keys:
        if _related(key, set_key) or _related(set_key, key):
            return f"{reason} (from --set {set_key}=...)"
    return reason


# ------------------------------------------------------------------------ TOML


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file; missing file, bad encoding or bad syntax -> ``ConfigError``."""
    path = Path(path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise _single(str(path), f"config file {what}; pass the path of a .toml file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _single(str(path), f"config file is not UTF-8 text ({exc.reason})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _toml_error(str(path), text, exc) from None


def _toml_error(source: str, text: str, exc: tomllib.TOMLDecodeError) -> ConfigError:
    """A ConfigError pointing at the line and column of a TOML syntax error."""
    msg = str(exc)
    found = re.search(r"\(at line (\d+), column (\d+)\)", msg)
    if not found:
        return _single(source, f"invalid TOML: {msg}")
    line, col = int(found.group(1)), int(found.group(2))
    detail = msg[: found.start()].strip()
    snippet = text.splitlines()[line - 1] if line <= len(text.splitlines()) else ""
    reason = f"invalid TOML at line {line}, column {col}: {detail}\n    {snippet}\n    {' ' * (col - 1)}^"
    err = _single(source, reason)
    err.line, err.column = line, col  # type: ignore[attr-defined]
    return err


def _single(key: str, reason: str, choices: list[str] | None = None) -> ConfigError:
    err = ConfigError(key, reason, choices)
    err.problems = [(key, reason, list(choices or []))]  # type: ignore[attr-defined]
    return err


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """A new dict: tables merge key by key, every other value in ``over`` replaces."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# ------------------------------------------------------------------- overrides


def parse_value(raw: str) -> Any:
    """A TOML value if ``raw`` is one (``1``, ``0.5``, ``true``, ``"x"``, ``[1,2]``, ``{a=1}``), else ``raw``."""
    raw = raw.strip()
    try:
        parsed = tomllib.loads(f"v = {raw}")
    except tomllib.TOMLDecodeError:
        return raw
    return parsed["v"] if list(parsed) == ["v"] else raw


def _split_key(key: str, item: str) -> list[str | int]:
    """``clients[0].lr`` or ``clients.0.lr`` -> ``['clients', 0, 'lr']``."""
    parts: list[str | int] = []
    for chunk in key.split("."):
        found = _PART.match(chunk.strip())
        if not found or not found.group(1) and not found.group(2):
            raise _single(item, f"bad override key {key!r}; {_SET_HINT}")
        if found.group(1):
            name = found.group(1)
            parts.append(int(name) if name.isdigit() else name)
        parts += [int(i) for i in re.findall(r"\[(\d+)\]", found.group(2))]
    return parts


def _parse_override(item: str) -> tuple[list[str | int], Any]:
    key, sep, raw = item.partition("=")
    if not sep:
        raise _single(item, f"override has no '='; {_SET_HINT}")
    if not key.strip():
        raise _single(item, f"override has no key before '='; {_SET_HINT}")
    return _split_key(key.strip(), item), parse_value(raw)


def _override_key(item: str) -> str:
    key = item.partition("=")[0]
    try:
        return format_key(_split_key(key.strip(), item))
    except ConfigError:
        return key.strip()


def apply_overrides(
    data: Mapping[str, Any],
    overrides: Iterable[str],
    defaults: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A copy of ``data`` with each ``a.b.c=VALUE`` override applied in order.

    A list or table missing from ``data`` is copied from ``defaults`` (the model's
    defaults as plain data) before it is edited, so one item of a default list
    can be overridden.
    """
    out = copy.deepcopy(dict(data))
    for item in overrides:
        parts, value = _parse_override(item)
        _set_path(out, parts, value, item, defaults or {})
    return out


def _set_path(data: dict, parts: list[str | int], value: Any, item: str, defaults: Mapping) -> None:
    node: Any = data
    for depth, part in enumerate(parts[:-1]):
        node = _descend(node, part, parts[: depth + 1], item, defaults)
    _assign(node, parts[-1], value, parts, item)


def _lookup(tree: Any, parts: list[str | int]) -> Any:
    """The value at ``parts`` in plain nested data, or None."""
    for part in parts:
        if isinstance(tree, Mapping):
            tree = tree.get(str(part))
        elif isinstance(tree, list) and isinstance(part, int) and part < len(tree):
            tree = tree[part]
        else:
            return None
    return tree


def _descend(node: Any, part: str | int, seen: list[str | int], item: str, defaults: Mapping) -> Any:
    """The child container at ``part``; a missing one comes from the defaults or is a new table."""
    if isinstance(node, list):
        _check_index(node, part, seen, item, allow_append=False)
        child = node[part]  # type: ignore[index]
    elif str(part) not in node:
        default = _lookup(defaults, seen)
        child = {} if default is None else copy.deepcopy(default)
        if isinstance(child, (dict, list)):
            node[str(part)] = child
    else:
        child = node[str(part)]
    if not isinstance(child, (dict, list)):
        raise _single(item, f"cannot set inside {format_key(seen)!r}: it is {child!r}, not a table or list")
    return child


def _assign(node: Any, part: str | int, value: Any, parts: list[str | int], item: str) -> None:
    if isinstance(node, list):
        _check_index(node, part, parts, item, allow_append=True)
        if part == len(node):
            node.append(value)
        else:
            node[part] = value  # type: ignore[index]
    else:
        node[str(part)] = value


def _check_index(node: list, part: str | int, seen: list[str | int], item: str, allow_append: bool) -> None:
    limit = len(node) + (1 if allow_append else 0)
    if not isinstance(part, int) or part >= limit:
        where = format_key(seen[:-1])
        raise _single(item, f"{where!r} is a list of {len(node)} items; index it with 0..{len(node) - 1} "
                            f"(got {part!r})")
