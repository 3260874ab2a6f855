"""One generic registry per plugin kind (models, datasets, loss models, algorithms, executors, ...).

Built-ins register at import with ``@REG.register("name")``; third parties use the entry-point
group ``meshlearn.<kind>`` in their ``pyproject.toml``. Duplicate names raise, unknown names raise
with the list of valid names. ``check_params`` checks the keyword parameters a config passes to a
registered factory (used by data, models and executors); ``per_contents`` caches what is built
from a registry's contents (the experiment kinds' config models).

A registry made with ``discover="meshlearn.fl"`` imports every module of that package (and its
subpackages) on its first lookup, so a built-in registers by existing: adding an algorithm is
adding one module, and nothing is imported before someone asks for the registry's contents.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import pkgutil
from importlib.metadata import entry_points
from typing import Any, Callable, Generic, Iterator, TypeVar

from meshlearn.errors import RegistryError, UsageError

T = TypeVar("T")

__all__ = ["Registry", "check_params", "per_contents"]


class Registry(Generic[T]):
    """A name → factory table for one plugin kind."""

    def __init__(self, kind: str, *, discover: str | None = None):
        self.kind = kind
        self.discover = discover  # package whose modules register the built-ins, imported on first lookup
        self._items: dict[str, T] = {}
        self._entry_points_loaded = False
        self._discovered = discover is None

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
        self._discover()
        if name not in self._items:
            self._load_entry_points()
        try:
            return self._items[name]
        except KeyError:
            valid = ", ".join(sorted(self._items)) or "none"
            raise RegistryError(f"unknown {self.kind} {name!r} (valid: {valid})") from None

    def names(self) -> list[str]:
        self._discover()
        self._load_entry_points()
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        """``(name, item)`` pairs, sorted by name (built-ins and plugins)."""
        return [(name, self._items[name]) for name in self.names()]

    def default(self) -> str:
        """The name of the one item marked ``default = True`` (what a config gets when it names none)."""
        names = [name for name, item in self.items() if getattr(item, "default", False)]
        if len(names) != 1:
            raise RegistryError(f"exactly one {self.kind} must be the default, found {names or 'none'}")
        return names[0]

    def __contains__(self, name: object) -> bool:
        self._discover()
        if name not in self._items:
            self._load_entry_points()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def _discover(self) -> None:
        """Import every module of the ``discover`` package once (they register as a side effect)."""
        if self._discovered:
            return
        self._discovered = True
        package = importlib.import_module(self.discover)
        for info in pkgutil.walk_packages(package.__path__, prefix=package.__name__ + "."):
            importlib.import_module(info.name)

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in entry_points(group=f"meshlearn.{self.kind}"):
            if ep.name not in self._items:
                self._items[ep.name] = ep.load()


def per_contents(registry: Callable[[], Registry]) -> Callable[[Callable[[], T]], Callable[[], T]]:
    """Decorate a builder of something derived from a registry's contents (a config model with a section
    per registered item): it builds once per set of names, and again after a plugin registers more.
    ``registry`` returns the registry (a function, so its module may be imported late)."""
    def decorate(build: Callable[[], T]) -> Callable[[], T]:
        built: dict[tuple[str, ...], T] = {}

        @functools.wraps(build)
        def cached() -> T:
            names = tuple(registry().names())
            if names not in built:
                built[names] = build()
            return built[names]

        return cached

    return decorate


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
