"""One generic registry per plugin kind (models, datasets, loss models, executors, ...).

Built-ins register at import with ``@REG.register("name")``; third parties use the entry-point
group ``meshlearn.<kind>`` in their ``pyproject.toml``. Duplicate names raise, unknown names raise
with the list of valid names. ``check_params`` checks the keyword parameters a config passes to a
registered factory (used by data, models and executors).
"""

from __future__ import annotations

import inspect
from importlib.metadata import entry_points
from typing import Any, Callable, Generic, Iterator, TypeVar

from meshlearn.errors import RegistryError, UsageError

T = TypeVar("T")

__all__ = ["Registry", "check_params"]


class Registry(Generic[T]):
    """A name → factory table for one plugin kind."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._entry_points_loaded = False

    def register(self, name: str, item: T | None = None):
        """Register ``item`` under ``name``; usable as ``@registry.register("name")``."""
        if item is not None:
            self._add(name, item)
            return item

        def decorator(obj: T) -> T:
            self._add(name, obj)
            return obj

        return decorator

    def _add(self, name: str, item: T) -> None:
        if name in self._items:
            raise RegistryError(f"{self.kind} {name!r} is already registered; pick another name")
        self._items[name] = item

    def get(self, name: str) -> T:
        """Return the item registered under ``name`` or raise listing the valid names."""
        if name not in self._items:
            self._load_entry_points()
        try:
            return self._items[name]
        except KeyError:
            valid = ", ".join(sorted(self._items)) or "none"
            raise RegistryError(f"unknown {self.kind} {name!r} (valid: {valid})") from None

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in entry_points(group=f"meshlearn.{self.kind}"):
            if ep.name not in self._items:
                self._items[ep.name] = ep.load()


def call_registered(registry: Registry[Callable[..., T]], name: str, **kwargs) -> T:
    """Look up ``name`` and call the factory with ``kwargs``."""
    return registry.get(name)(**kwargs)


def check_params(fn: Callable[..., Any], what: str, given: dict[str, Any], fixed: int = 0) -> None:
    """Raise UsageError if ``given`` has unknown keys for ``fn`` or lacks required ones.

    Config files pass plugin parameters as a dict; a misspelt key should say which keys exist
    instead of surfacing as a bare ``TypeError``. ``fixed`` is the number of leading positional
    parameters the caller supplies itself.
    """
    params = list(inspect.signature(fn).parameters.values())[fixed:]
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    names = [p.name for p in params]
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise UsageError(f"{what}: unknown parameter(s) {', '.join(unknown)} (valid: {', '.join(names) or 'none'})")
    missing = [p.name for p in params if p.default is p.empty and p.name not in given]
    if missing:
        raise UsageError(f"{what}: missing required parameter(s) {', '.join(missing)}")
