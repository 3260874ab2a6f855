"""A simulated SWIM cluster experiment: crashes at random moments, what the members concluded.

``simulate_swim(settings, seed=...)`` builds ``nodes`` warm-started members (or lets them join
through one seed), crashes ``crash_fraction`` of them at uniform random times in the first 80% of
the run, and reports per crash: first suspicion, first DEAD declaration, and the moment every
live member knew; plus false deaths (live members declared dead), traffic per member per second
and the drop counters. ``meshlearn overlay sim`` stores the result in the run store.
"""

from __future__ import annotations

import math
from collections import Counter
from operator import itemgetter
from typing import Any, Callable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, ValidationError, field_validator

from meshlearn.config.problems import config_error, problems_from
from meshlearn.errors import ConfigError
from meshlearn.net.link import LinkSpec
from meshlearn.overlay.simnet import LAN_LINK, crash_at, overlay_simulator
from meshlearn.overlay.swim.config import SWIM_PRESETS, SwimConfig, swim_preset
from meshlearn.overlay.swim.node import ALL, SwimNode
from meshlearn.overlay.swim.state import Roster
from meshlearn.overlay import studies
from meshlearn.study import Study

__all__ = ["SwimSimSettings", "simulate_swim"]


class SwimSimSettings(BaseModel):
    """A simulated SWIM cluster: size, timing preset, failures and the network."""

    model_config = ConfigDict(extra="forbid")

    nodes: int = Field(1000, ge=2, le=100_000, description="cluster members")
    preset: str = Field("lan", description=f"timing preset: {' | '.join(SWIM_PRESETS)} (memberlist's)")
    config: dict[str, Any] = Field(default_factory=dict, description="SwimConfig fields overriding the preset")
    duration_s: float = Field(120.0, gt=0, description="virtual seconds to simulate")
    crash_fraction: float = Field(0.01, ge=0, lt=1, description="members crashed at random moments")
    warm_start: bool = Field(True, description="members start knowing everyone (else they join via one seed)")
    link: LinkSpec = Field(LAN_LINK, description="each member's access link (latency, jitter, loss)")

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str) -> str:
        if value not in SWIM_PRESETS:
            raise ConfigError("", f"unknown SWIM preset {value!r}", sorted(SWIM_PRESETS))
        return value

    @field_validator("config")
    @classmethod
    def _config_builds(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        """Build the SwimConfig now, at config time, so a bad field is a config error naming it, not a failed run."""
        if "preset" in info.data:  # else the preset's own error is reported
            try:
                swim_preset(info.data["preset"], **value)
            except ValidationError as exc:
                raise config_error(problems_from(SwimConfig, exc)) from None
        return value


def simulate_swim(settings: SwimSimSettings, *, seed: int,
                  progress: Callable[[float], None] | None = None) -> dict[str, Any]:
    """Run the cluster; summary metrics plus one row per crash (``crashes``)."""
    config = swim_preset(settings.preset, **settings.config)
    ids = [f"m{i:05d}" for i in range(settings.nodes)]
    roster, events = Roster(ids), []
    nodes = [SwimNode(node, config, roster=roster, members=ALL if settings.warm_start else (),
                      seeds=() if settings.warm_start else ids[:1], on_event=lambda *e: events.append(e))
             for node in ids]
    sim = overlay_simulator(nodes, link=settings.link, seed=seed)
    crashes = _schedule_crashes(sim, ids, settings, seed)
    _run(sim, settings.duration_s, progress)
    by_member: dict[str, list] = {}
    for event in events:
        by_member.setdefault(event[3], []).append(event)
    live = set(ids) - set(crashes)
    rows = [_crash_row(by_member.get(node, []), node, t, live) for node, t in sorted(crashes.items(), key=itemgetter(1))]
    return _summary(sim, nodes, events, crashes, rows, settings)


def _schedule_crashes(sim, ids: list[str], settings: SwimSimSettings, seed: int) -> dict[str, float]:
    rng = np.random.default_rng([seed, 7])
    count = int(round(settings.crash_fraction * len(ids)))
    victims = rng.choice(len(ids), size=count, replace=False)
    times = rng.uniform(0.05, 0.8, size=count) * settings.duration_s
    crashes = {ids[v]: float(t) for v, t in zip(victims, times)}
    for node, t in crashes.items():
        crash_at(sim, node, t)
    return crashes


def _run(sim, duration: float, progress: Callable[[float], None] | None) -> None:
    steps = 50
    for i in range(1, steps + 1):
        sim.run(until=duration * i / steps)
        if progress is not None:
            progress(i / steps)


def _crash_row(events: list, victim: str, t_crash: float, live: set[str]) -> dict[str, float]:
    """What the live members concluded about one crashed member (``events`` are about it)."""
    suspect = [t for t, _, e, _ in events if e == "suspect" and t >= t_crash]
    dead: dict[str, float] = {}
    for t, me, e, _ in events:
        if e == "dead" and t >= t_crash:
            dead.setdefault(me, t)
    knew = [dead[n] for n in live if n in dead]
    everyone = max(knew) - t_crash if len(knew) == len(live) else math.nan
    return dict(crash_s=t_crash, first_suspect_s=min(suspect, default=math.inf) - t_crash,
                first_dead_s=min(knew, default=math.inf) - t_crash, all_know_s=everyone,
                knew_fraction=len(knew) / max(len(live), 1))


def _summary(sim, nodes, events, crashes, rows, settings) -> dict[str, Any]:
    false_deaths = sum(1 for _, _, e, m in events if e == "dead" and m not in crashes)
    stats = Counter()
    for node in nodes:
        stats.update(node.stats)
    sent = sum(sim.network.wire_bytes_sent.values())
    finite = [r for r in rows if math.isfinite(r["all_know_s"])]
    return dict(
        nodes=settings.nodes, crashes=rows, crashed=len(crashes), false_deaths=false_deaths,
        detected_fraction=(sum(r["knew_fraction"] == 1.0 for r in rows) / len(rows)) if rows else math.nan,
        mean_first_suspect_s=_mean([r["first_suspect_s"] for r in rows]),
        mean_first_dead_s=_mean([r["first_dead_s"] for r in rows]),
        mean_all_know_s=_mean([r["all_know_s"] for r in finite]),
        bytes_per_member_s=sent / settings.nodes / settings.duration_s,
        refutations=stats["refutations"], stale_updates=stats["stale_updates"],
        dropped_messages=sim.dropped_messages,
    )


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


studies.register(Study("swim", "SWIM + Lifeguard membership: crashes at random moments, detection and dissemination "
                       "times", SwimSimSettings, simulate_swim, default=True))
