"""Faults as scheduled data: crashes, recoveries, churn and partitions.

Users write a ``FaultSchedule`` in TOML; ``expand(node_ids, rng, horizon_s)`` turns it into a
time-sorted list of plain events (``Crash``, ``Recover``, ``Partition``, ``Heal``) that a runtime
applies. Ties keep definition order: explicit crashes, then churn, then partitions.

Partition semantics (shared with ``Network.partition``): nodes in different groups cannot talk;
nodes named in no group form one further implicit group. ``Heal`` removes the partition.
Churn is an alternating renewal process per node: up times ~ Exp(rate), down times ~ Exp(mean
downtime). Churn and explicit crashes are not reconciled; a runtime should treat a ``Crash`` of a
node that is already down (or a ``Recover`` of one that is up) as a no-op.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from meshlearn.errors import ConfigError, UsageError

__all__ = [
    "Crash",
    "Recover",
    "Partition",
    "Heal",
    "FaultEvent",
    "CrashSpec",
    "ChurnSpec",
    "PartitionSpec",
    "FaultSchedule",
]


@dataclass(frozen=True)
class Crash:
    """``node`` stops at ``time``: it neither sends nor receives until it recovers."""

    time: float
    node: str


@dataclass(frozen=True)
class Recover:
    """``node`` comes back at ``time`` (with whatever state the runtime keeps across crashes)."""

    time: float
    node: str


@dataclass(frozen=True)
class Partition:
    """From ``time`` on, only nodes in the same group can talk (unlisted nodes: one extra group)."""

    time: float
    groups: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Heal:
    """At ``time`` the partition ends and every pair can talk again."""

    time: float


FaultEvent = Union[Crash, Recover, Partition, Heal]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CrashSpec(_Strict):
    """One scripted crash of ``node`` at ``at`` seconds, optionally recovering at ``recover_at``."""

    node: str
    at: float = Field(ge=0)
    recover_at: float | None = None

    @model_validator(mode="after")
    def _recover_after_crash(self) -> "CrashSpec":
        if self.recover_at is not None and not self.recover_at > self.at:
            raise ValueError(f"recover_at ({self.recover_at}) must be later than at ({self.at})")
        return self


class ChurnSpec(_Strict):
    """Poisson churn: each listed node fails at ``rate_per_node_per_s`` and stays down ~Exp(mean)."""

    rate_per_node_per_s: float = Field(gt=0, allow_inf_nan=False)
    mean_downtime_s: float = Field(gt=0, allow_inf_nan=False)
    nodes: list[str] | Literal["all"] = "all"


class PartitionSpec(_Strict):
    """A network split from ``at`` until ``until`` (None: never heals)."""

    at: float = Field(ge=0)
    until: float | None = None
    groups: list[list[str]] = Field(min_length=1)

    @model_validator(mode="after")
    def _until_after_at(self) -> "PartitionSpec":
        if self.until is not None and not self.until > self.at:
            raise ValueError(f"until ({self.until}) must be later than at ({self.at})")
        names = [n for g in self.groups for n in g]
        if len(set(names)) != len(names):
            raise ValueError("a node may appear in only one partition group")
        return self


class FaultSchedule(_Strict):
    """The faults of one experiment, as written in the ``[faults]`` table of a config file."""

    crashes: list[CrashSpec] = Field(default_factory=list)
    churn: ChurnSpec | None = None
    partitions: list[PartitionSpec] = Field(default_factory=list)

    def expand(self, node_ids: list[str], rng: np.random.Generator, horizon_s: float) -> list[FaultEvent]:
        """Concrete events in ``[0, horizon_s]``, sorted by (time, definition order)."""
        if not horizon_s >= 0:
            raise UsageError(f"horizon_s must be >= 0, got {horizon_s}")
        self._check_names(node_ids)
        events = self._crash_events() + self._churn_events(node_ids, rng, horizon_s) + self._partition_events()
        kept = [(e.time, i, e) for i, e in enumerate(events) if e.time <= horizon_s]
        return [e for _, _, e in sorted(kept, key=lambda item: item[:2])]

    def _crash_events(self) -> list[FaultEvent]:
        events: list[FaultEvent] = []
        for spec in self.crashes:
            events.append(Crash(spec.at, spec.node))
            if spec.recover_at is not None:
                events.append(Recover(spec.recover_at, spec.node))
        return events

    def _churn_events(self, node_ids: list[str], rng: np.random.Generator, horizon_s: float) -> list[FaultEvent]:
        if self.churn is None:
            return []
        if not math.isfinite(horizon_s):
            raise UsageError("churn needs a finite horizon_s to expand over")
        nodes = node_ids if self.churn.nodes == "all" else self.churn.nodes
        mean_up = 1.0 / self.churn.rate_per_node_per_s
        events: list[FaultEvent] = []
        for node in nodes:
            times = _renewal_times(rng, mean_up, self.churn.mean_downtime_s, horizon_s)
            events += [Crash(float(t), node) if i % 2 == 0 else Recover(float(t), node) for i, t in enumerate(times)]
        return events

    def _partition_events(self) -> list[FaultEvent]:
        events: list[FaultEvent] = []
        for spec in self.partitions:
            events.append(Partition(spec.at, tuple(tuple(g) for g in spec.groups)))
            if spec.until is not None:
                events.append(Heal(spec.until))
        return events

    def _check_names(self, node_ids: list[str]) -> None:
        valid = set(node_ids)
        named = [(f"faults.crashes[{i}].node", c.node) for i, c in enumerate(self.crashes)]
        if self.churn is not None and self.churn.nodes != "all":
            named += [(f"faults.churn.nodes[{i}]", n) for i, n in enumerate(self.churn.nodes)]
        for i, part in enumerate(self.partitions):
            named += [(f"faults.partitions[{i}].groups", n) for g in part.groups for n in g]
        for key, name in named:
            if name not in valid:
                raise ConfigError(key, f"unknown node {name!r}", _some(node_ids))
        self._check_partitions_disjoint()

    def _check_partitions_disjoint(self) -> None:
        spans = sorted((p.at, math.inf if p.until is None else p.until) for p in self.partitions)
        for (_, end), (start, _) in zip(spans, spans[1:]):
            if start < end:
                raise ConfigError("faults.partitions", "partitions overlap in time; end one (until) before the next")


def _some(names: list[str], limit: int = 20) -> list[str]:
    """The first ``limit`` names, with a count of the rest, for error messages."""
    return list(names[:limit]) + ([f"... {len(names) - limit} more"] if len(names) > limit else [])


def _renewal_times(rng: np.random.Generator, mean_up: float, mean_down: float, horizon: float) -> np.ndarray:
    """Alternating crash/recover times of one node in ``[0, horizon]``, starting up at time 0."""
    cycles = int(1.2 * horizon / (mean_up + mean_down)) + 4
    times = np.empty(0)
    while times.size == 0 or times[-1] <= horizon:
        gaps = np.empty(2 * cycles)
        gaps[0::2] = rng.exponential(mean_up, cycles)
        gaps[1::2] = rng.exponential(mean_down, cycles)
        start = times[-1] if times.size else 0.0
        times = np.concatenate([times, start + np.cumsum(gaps)])
    return times[times <= horizon]
