"""The swarm studies (``study = "..."`` in a swarm experiment file) and their registry.

    churn   the four placement arms (ours, Petals', central, static) on one Poisson trace   [churn]
            of joins and crashes (``placement_sim``): bottleneck vs central, migrations
    scale   servers in sites with requests, crashes and re-placement (``scale_sim``):      [scale]
            requests completed, answers bitwise equal to the unsplit model, wall time

A study's ``run(settings, *, seed, progress, **context)``; ``scale`` needs the model, which only
``swarm.blocks`` may build (torch): the experiment kind passes ``model(settings, seed)`` in the context,
returning ``(workspace, blocks, inputs, reference)``. Both studies are registered here (no discovery: the
other swarm modules must not be imported for a lookup, and ``swarm.blocks`` imports torch).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from meshlearn.errors import UsageError
from meshlearn.registry import Registry
from meshlearn.study import Study
from meshlearn.swarm.placement_sim import ARMS, ChurnSettings, Optimum, churn_trace, make_servers, simulate
from meshlearn.swarm.scale_sim import ScaleSettings, simulate_scale

__all__ = ["STUDIES", "register", "ChurnStudy", "ScaleStudy", "run_churn", "run_scale"]

STUDIES: Registry[Study] = Registry("swarm_studies")
Progress = Callable[[float], None]


def register(study: Study) -> Study:
    return STUDIES.register(study.name, study)


class ChurnStudy(BaseModel):
    """Placement under churn: the arms of issue 13 on one trace (see ``meshlearn.swarm.placement_sim``)."""

    model_config = ConfigDict(extra="forbid")

    servers: int = Field(64, ge=2, description="servers at the start")
    blocks: int = Field(32, ge=1, description="blocks of the model")
    target: int = Field(3, ge=1, description="replicas per block (ours)")
    events: int = Field(8, ge=1, description="churn events (even odds crash / join)")
    mean_gap_s: float = Field(20.0, gt=0, description="mean time between churn events (Poisson)")
    arms: list[str] = Field(list(ARMS), description=f"placement arms to run ({', '.join(ARMS)})")
    detect_heartbeats: int = Field(2, ge=1, description="ours: heartbeats until a crash is known")
    load_s_per_block: float = Field(0.1, ge=0, description="seconds to load one block")


def run_churn(settings: ChurnStudy, *, seed: int, progress: Progress | None = None, **_: Any) -> dict[str, Any]:
    unknown = sorted(set(settings.arms) - set(ARMS))
    if unknown:
        raise UsageError(f"unknown placement arm(s) {unknown} (valid: {', '.join(ARMS)})")
    cfg = ChurnSettings(servers=settings.servers, blocks=settings.blocks, target=settings.target,
                        detect_heartbeats=settings.detect_heartbeats, load_s_per_block=settings.load_s_per_block,
                        seed=seed)
    initial = make_servers(cfg.servers, np.random.default_rng(seed), capacity=cfg.capacity, sites=cfg.sites)
    trace = churn_trace(cfg, initial, settings.events, 1.0 / settings.mean_gap_s, np.random.default_rng(1000 + seed))
    optimum, out = Optimum(cfg), {}
    for i, arm in enumerate(settings.arms):
        t0 = time.perf_counter()
        result = simulate(arm, cfg, initial, trace, trace[-1].t + 60.0, optimum)
        times = result.pop("recovery_s")
        recovery = [r for r in times if r is not None]
        out[arm] = {**result, "worst_recovery_s": max(recovery, default=0.0), "not_back": len(times) - len(recovery),
                    "wall_s": round(time.perf_counter() - t0, 2)}
        if progress is not None:
            progress((i + 1) / len(settings.arms))
    return {"events": len(trace), "crashes": sum(e.kind == "crash" for e in trace), **out}


class ScaleStudy(ScaleSettings):
    """The swarm at scale (see ``meshlearn.swarm.scale_sim``) with a tiny GPT cut into ``blocks`` blocks."""

    blocks: int = Field(8, ge=1, description="transformer blocks of the tiny GPT (one block each)")
    d_model: int = Field(32, ge=2, description="width of the tiny GPT")
    tokens: int = Field(16, ge=1, description="tokens per request")
    inputs: int = Field(32, ge=1, description="distinct inputs the clients draw their requests from")


def run_scale(settings: ScaleStudy, *, seed: int, progress: Progress | None = None,
              model: Callable[[ScaleStudy, int], tuple] | None = None, **_: Any) -> dict[str, Any]:
    if model is None:
        raise UsageError("the scale study needs a model builder (model=...): run it through the swarm experiment "
                         "kind, or pass model(settings, seed) -> (workspace, blocks, inputs, reference)")
    workspace, blocks, inputs, reference = model(settings, seed)
    cfg = ScaleSettings(**{k: getattr(settings, k) for k in ScaleSettings.model_fields})
    return simulate_scale(cfg, workspace, blocks, inputs, reference, seed=seed, progress=progress)


register(Study("churn", "placement arms (ours, Petals, central, static) under Poisson joins and crashes",
               ChurnStudy, run_churn))
register(Study("scale", "servers in sites, crashes, re-placement and requests through a block model",
               ScaleStudy, run_scale, default=True))
