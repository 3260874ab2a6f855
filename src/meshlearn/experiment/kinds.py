"""Experiment kinds: what an experiment file can describe (``kind = "..."`` at its top).

A kind registers one ``ExperimentKind`` in ``KINDS`` from its own module under
``meshlearn.experiment`` (the registry discovers them, and entry points in the group
``meshlearn.experiment_kinds``). The lifecycle (``lifecycle.py``) and the CLI only look kinds up:

    config()               the typed config model (it may be built from plugin registries)
    check(config)          config problems the model cannot see, found before a run directory exists
    prepare(config, state) everything that can fail on bad input (data, nodes, executors), still
                           without a run directory; returns a ``Prepared`` that runs once
    resume(run, config)    the state a stored run continues from (None: the kind cannot resume)
    resume_keys            the dotted keys a resume may change (``run --resume X --set fl.rounds=80``)
    describe(config)       what ran, for run.json and listings (e.g. {"algorithm": "fedavg"})
    summary(run)           (label, text) rows for the CLI's end-of-run table and ``runs show``
    table(run)             (columns, rows) of per-step metrics for ``runs show`` (None: summary only)
    step                   the unit of progress ("round", "epoch", "step")
    headline(run, target)  comparable numbers for ``runs compare`` (final accuracy, bytes, time, time to target)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol

from pydantic import BaseModel

from meshlearn.registry import Registry

__all__ = ["KINDS", "ExperimentKind", "Prepared", "Outcome", "RunContext", "default_kind", "kind_named", "register"]


@dataclass
class Outcome:
    """How a run ended: ``completed`` or ``stopped``, what goes into run.json, and why it stopped early."""

    status: str
    info: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # a stopped run's reason: the lifecycle records the status, then raises it


class RunContext(Protocol):
    """What a prepared experiment may do while it runs (the lifecycle provides it)."""

    run: Any  # the store's Run: metrics (``run.metrics``), checkpoints, info

    def progress(self, step: int, metrics: Mapping[str, float] | None = None) -> None:
        """Step ``step`` of ``Prepared.total`` is done (a round, an epoch, a fraction x 1000...)."""
        ...

    def log(self, text: str, *, level: str = "info") -> None:
        """A line for the run's log file (and the console when it is a warning)."""
        ...


class Prepared(Protocol):
    """An experiment built and ready to run once; ``close()`` frees what ``prepare`` took."""

    total: int | None  # planned steps for progress bars (None: unknown)

    def run(self, ctx: RunContext) -> Outcome: ...

    def close(self) -> None: ...


def _no_check(config: Any) -> None:
    return None


def _no_table(run: Any) -> None:
    return None


@dataclass(frozen=True)
class ExperimentKind:
    """One kind of experiment (see the module docstring)."""

    name: str
    summary_text: str
    config: Callable[[], type[BaseModel]]
    prepare: Callable[[Any, Any], Prepared]
    describe: Callable[[Any], dict[str, Any]]
    summary: Callable[[Any], list[tuple[str, str]]]
    headline: Callable[[Any, float], dict[str, float | str | None]]
    check: Callable[[Any], None] = _no_check
    table: Callable[[Any], tuple[list[str], list[list[str]]] | None] = _no_table
    resume: Callable[[Any, Any], Any] | None = None
    resumable: Callable[[Any], bool] = lambda config: False
    resume_keys: tuple[str, ...] = ()
    step: str = "step"
    default: bool = False


KINDS: Registry[ExperimentKind] = Registry("experiment_kinds", discover="meshlearn.experiment")


def register(kind: ExperimentKind) -> ExperimentKind:
    """Register ``kind`` under its name (what a kind module calls once)."""
    return KINDS.register(kind.name, kind)


def default_kind() -> str:
    """The kind of an experiment file without a ``kind`` key (the one registered with ``default=True``)."""
    return KINDS.default()


def kind_named(name: str | None) -> ExperimentKind:
    """The kind registered as ``name`` (the default kind for None)."""
    return KINDS.get(default_kind() if name is None else name)
