"""Overlay experiments as one TOML file: which protocol, its settings, and where results go.

``OverlayExperiment`` picks one of ``OVERLAY_PROTOCOLS`` (``swim``, ``propagation``, ``dsml``);
each entry is (settings section, simulate function). ``run_overlay`` stores the config, the
scalar results as metrics, and table-like results (one row per crash / round / distance) as
metric series indexed by row, so `meshlearn runs show / export / compare` work on them.

    name = "swim-1000"
    seed = 0
    protocol = "swim"

    [swim]
    nodes = 1000
    crash_fraction = 0.01
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator

from meshlearn.config import to_toml
from meshlearn.errors import ConfigError
from meshlearn.overlay.chord.sim import PropagationSettings, simulate_propagation
from meshlearn.overlay.dsml.sim import DsmlSettings, simulate_dsml
from meshlearn.overlay.swim.sim import SwimSimSettings, simulate_swim
from meshlearn.registry import Registry
from meshlearn.store import Run, RunStore

__all__ = ["OverlayExperiment", "OVERLAY_PROTOCOLS", "run_overlay", "flatten_results"]


class Protocol(NamedTuple):
    section: str
    simulate: Callable[..., dict]


OVERLAY_PROTOCOLS: Registry[Protocol] = Registry("overlay_protocols")
OVERLAY_PROTOCOLS.register("swim", Protocol("swim", simulate_swim))
OVERLAY_PROTOCOLS.register("propagation", Protocol("propagation", simulate_propagation))
OVERLAY_PROTOCOLS.register("dsml", Protocol("dsml", simulate_dsml))


class OverlayExperiment(BaseModel):
    """A simulated overlay experiment (techniques-mizutani.md §1, §2, §5)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("overlay", description="run name in the run store")
    seed: int = Field(0, ge=0, description="root seed: same seed, same results")
    protocol: str = Field("swim", description="swim | propagation | dsml")
    swim: SwimSimSettings = Field(default_factory=SwimSimSettings, description="SWIM cluster (protocol = swim)")
    propagation: PropagationSettings = Field(default_factory=PropagationSettings,
                                             description="Chord failure propagation (protocol = propagation)")
    dsml: DsmlSettings = Field(default_factory=DsmlSettings, description="DSML aggregation (protocol = dsml)")

    @field_validator("protocol")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in OVERLAY_PROTOCOLS:
            raise ConfigError("protocol", f"unknown overlay protocol {value!r}", OVERLAY_PROTOCOLS.names())
        return value

    def settings(self) -> BaseModel:
        return getattr(self, OVERLAY_PROTOCOLS.get(self.protocol).section)


def flatten_results(results: dict[str, Any], prefix: str = "") -> list[tuple[str, float, int | None]]:
    """(key, value, row) for every number in ``results``: scalars, nested dicts, lists of rows."""
    out: list[tuple[str, float, int | None]] = []
    for key, value in results.items():
        name = f"{prefix}{key}"
        if isinstance(value, bool):
            out.append((name, float(value), None))
        elif isinstance(value, (int, float)):
            out.append((name, float(value), None))
        elif isinstance(value, dict):
            out += flatten_results(value, f"{name}.")
        elif isinstance(value, list):
            for i, row in enumerate(value):
                if isinstance(row, dict):
                    out += [(k, v, i) for k, v, _ in flatten_results(row, f"{name}.")]
    return [(k, v, r) for k, v, r in out if not math.isnan(v)]


def run_overlay(cfg: OverlayExperiment, store: RunStore, *, command: str,
                progress: Callable[[float], None] | None = None) -> tuple[Run, dict]:
    """Simulate ``cfg`` into a new run of ``store``; returns the run and the raw results."""
    run = store.create_run(cfg.name, to_toml(cfg), {"seed": cfg.seed, "kind": "overlay",
                                                   "protocol": cfg.protocol, "command": command})
    try:
        results = OVERLAY_PROTOCOLS.get(cfg.protocol).simulate(cfg.settings(), seed=cfg.seed, progress=progress)
        run.metrics.log_many(dict(key=f"{cfg.protocol}.{k}", value=v, round=r) for k, v, r in flatten_results(results))
        run.metrics.flush()
    except BaseException:
        run.set_status("failed")
        raise
    run.set_status("completed")
    return run, results
