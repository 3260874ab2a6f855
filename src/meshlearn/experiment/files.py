"""Experiment files: a TOML file or a bundled preset → the validated config of its kind.

The kind is read from the file's ``kind`` key (absent: the default kind), so one ``meshlearn run
FILE.toml`` runs any kind. ``--set a.b=VALUE`` overrides apply before validation; every problem
comes back as one ``ConfigError`` naming the key.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

from pydantic import BaseModel

from meshlearn.config import load_config, parse_value, read_toml, validate_config
from meshlearn.errors import ConfigError
from meshlearn.experiment.kinds import KINDS, ExperimentKind, kind_named

__all__ = ["preset_names", "resolve_config_path", "load_experiment", "parse_experiment"]


def preset_names() -> list[str]:
    """The presets bundled with meshlearn (``meshlearn run NAME``)."""
    return sorted(p.name[:-5] for p in resources.files("meshlearn.presets").iterdir() if p.name.endswith(".toml"))


def resolve_config_path(config: str | Path) -> Path:
    """A path to a TOML file, or the name of a bundled preset."""
    path = Path(config)
    if path.exists():
        return path
    if str(config) in preset_names():
        return Path(str(resources.files("meshlearn.presets") / f"{config}.toml"))
    raise ConfigError("config", f"no file {str(config)!r} and no preset of that name", preset_names())


def _kind_name(raw: Mapping[str, Any], overrides: list[str]) -> str | None:
    for item in reversed(overrides):
        key, sep, value = item.partition("=")
        if sep and key.strip() == "kind":
            return str(parse_value(value))
    kind = raw.get("kind")
    return None if kind is None else str(kind)


def load_experiment(config: str | Path, overrides: Iterable[str] = ()) -> BaseModel:
    """The validated config of a TOML file or preset, of whatever kind it declares."""
    path, overrides = resolve_config_path(config), list(overrides)
    kind = _kind_from(_kind_name(read_toml(path), overrides), str(path))
    return load_config(kind.config(), path, overrides)


def parse_experiment(data: Mapping[str, Any], source: str = "") -> BaseModel:
    """Validate plain data (a parsed TOML document) as the config of the kind it declares."""
    kind = _kind_from(_kind_name(data, []), source)
    return validate_config(kind.config(), data, source=source)


def _kind_from(name: str | None, source: str) -> ExperimentKind:
    if name is not None and name not in KINDS:
        raise ConfigError("kind", f"unknown experiment kind {name!r}" + (f" (in {source})" if source else ""),
                          KINDS.names())
    return kind_named(name)
