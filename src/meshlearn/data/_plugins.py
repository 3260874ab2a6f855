"""Calling a registered factory with user-supplied keyword parameters.

Config files pass plugin parameters as a dict; a misspelt key should say which keys exist
instead of surfacing as a bare ``TypeError``. Shared by ``data`` and ``models``.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from meshlearn.errors import UsageError

__all__ = ["check_params"]


def check_params(fn: Callable[..., Any], what: str, given: dict[str, Any], fixed: int = 0) -> None:
    """Raise UsageError if ``given`` has unknown keys or lacks required ones.

    ``fixed`` is the number of leading positional parameters the caller supplies itself.
    """
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())[fixed:]
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    names = [p.name for p in params]
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise UsageError(f"{what}: unknown parameter(s) {', '.join(unknown)} (valid: {', '.join(names) or 'none'})")
    missing = [p.name for p in params if p.default is p.empty and p.name not in given]
    if missing:
        raise UsageError(f"{what}: missing required parameter(s) {', '.join(missing)}")
