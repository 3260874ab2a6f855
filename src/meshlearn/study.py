"""Studies: experiments that run one function over one settings model and report its results.

Overlay protocols (``swim``, ``propagation``, ...) and split-computing studies (``tune``, ``search``,
...) are studies: each registers a ``Study`` in its kind's registry from its own module, and the
kind (``meshlearn.experiment.overlay`` / ``.split``) gives it a config section, runs it through the
one run lifecycle and stores the results. A result is a dict of numbers, nested dicts, and lists
of dicts (row tables: one row per crash, round, distance, rate ...); ``flatten_results`` turns it
into metric rows ``(key, value, row)`` for the run store.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from pydantic import BaseModel

__all__ = ["Study", "flatten_results"]


@dataclass(frozen=True)
class Study:
    """One study: ``run(settings, *, seed, progress, **context) -> results`` over its ``settings`` model.

    ``progress(fraction)`` takes the share done in [0, 1]; ``section`` is its config section
    (default: its name); ``uses`` names the shared keys of its kind's config it reads besides its
    section (the kind rejects non-default values of the others); exactly one study of a kind is its
    ``default``. ``check`` validates what the config cannot (files to read, directories to write),
    so a mistake is reported before any run directory exists.
    """

    name: str
    summary: str
    settings: type[BaseModel]
    run: Callable[..., dict[str, Any]]
    section: str | None = None
    uses: tuple[str, ...] = ()
    default: bool = False
    check: Callable[..., None] | None = None  # check(settings, **context): inputs on disk, before a run exists

    @property
    def key(self) -> str:
        return self.section or self.name


def flatten_results(results: dict[str, Any], prefix: str = "") -> list[tuple[str, float, int | None]]:
    """(key, value, row) for every number in ``results``: scalars, nested dicts, lists of rows; NaNs dropped."""
    out: list[tuple[str, float, int | None]] = []
    for key, value in results.items():
        name = f"{prefix}{key}"
        if isinstance(value, (bool, int, float)):
            out.append((name, float(value), None))
        elif isinstance(value, dict):
            out += flatten_results(value, f"{name}.")
        elif isinstance(value, list):
            for i, row in enumerate(value):
                if isinstance(row, dict):
                    out += [(k, v, i) for k, v, _ in flatten_results(row, f"{name}.")]
    return [(k, v, r) for k, v, r in out if not math.isnan(v)]
