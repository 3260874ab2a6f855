"""Run a simulated experiment into the run store: create or resume, progress, Ctrl-C, summary.

A run directory holds the resolved config, run.json (status, versions, seed), metrics.sqlite and
the last checkpoints. Metrics are flushed after every round, and the server checkpoints every
completed round, so an interrupted run resumes at its last completed round and loses none.
"""

from __future__ import annotations

import platform
import sys
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from meshlearn import __version__
from meshlearn.config import load_config, to_toml
from meshlearn.errors import StoreError
from meshlearn.experiment.build import build_simulation, horizon_s
from meshlearn.experiment.schema import ExperimentConfig
from meshlearn.store import Run, RunStore

__all__ = ["RoundSink", "RunOutcome", "prepare_run", "run_info", "run_simulated"]

RUN_KEYS = ("accuracy", "loss", "bytes_up", "bytes_down", "clients_completed", "clients_dropped", "virtual_time")


def run_info(cfg: ExperimentConfig) -> dict:
    """Versions and seed stored beside the config, so a run can be reproduced later."""
    import torch

    return {"meshlearn": __version__, "python": platform.python_version(), "numpy": np.__version__,
            "torch": torch.__version__, "seed": cfg.seed, "argv": sys.argv}


class RoundSink:
    """Metric sink that writes to the run's SQLite store and reports each finished round."""

    def __init__(self, run: Run, on_round: Callable[[int, dict], None] | None):
        self.db, self.on_round = run.metrics, on_round
        self.current: dict[str, float] = {}

    def log(self, key, value, *, round=None, node=None, t_sim=None, t_wall=None) -> None:
        self.db.log(key, value, round=round, node=node, t_sim=t_sim, t_wall=t_wall)
        if node is None and round is not None:
            self.current[key] = value
            if key == "virtual_time":  # the server's last metric of a round
                self.db.flush()
                if self.on_round:
                    self.on_round(round, dict(self.current))
                self.current = {}


@dataclass
class RunOutcome:
    run: Run
    rounds: int
    final: dict
    wall_s: float
    completed: bool


def prepare_run(store: RunStore, cfg: ExperimentConfig | None, resume: str | None):
    """Create a run for `cfg`, or reopen `resume`: (run, config, (round, params) | None, virtual start time)."""
    if resume is None:
        run = store.create_run(cfg.name, to_toml(cfg), run_info(cfg))
        return run, cfg, None, 0.0
    run = store.open_run(resume)
    cfg = load_config(ExperimentConfig, run.path / "config.toml")
    ckpt = run.latest_checkpoint()
    if ckpt is None:
        run.metrics.delete_after_round(0)
        return run, cfg, None, 0.0
    done, tensors, meta = ckpt
    run.metrics.delete_after_round(done)
    return run, cfg, (done, tensors), float(meta.get("virtual_time", 0.0))


def run_simulated(cfg: ExperimentConfig | None, *, store: RunStore, resume: str | None = None,
                  on_round: Callable[[int, dict], None] | None = None) -> RunOutcome:
    """Run (or resume) one simulated FL experiment; Ctrl-C leaves a resumable run behind."""
    run, cfg, state, t0 = prepare_run(store, cfg, resume)
    save = run.save_checkpoint if cfg.runtime.checkpoint and cfg.fl.algorithm not in ("cmfd", "gossip", "tram") else None
    on_ckpt = (lambda node, rnd, tensors, meta: save(rnd, tensors, meta)) if save else None
    try:
        sim = build_simulation(cfg, sink=RoundSink(run, on_round), on_checkpoint=on_ckpt, resume=state, start_time=t0)
    except Exception as err:
        run.set_status("failed", error=str(err))
        raise
    run.set_status("running")
    wall0 = time.perf_counter()
    if state is not None and not sim.plan.resumable:
        raise StoreError(f"runs of {cfg.fl.algorithm} cannot be resumed yet; start a new run")
    try:
        sim.sim.run(until=t0 + horizon_s(cfg))
        if sim.plan.on_end:
            sim.plan.on_end()
    except KeyboardInterrupt:
        run.metrics.flush()
        run.set_status("interrupted", completed_round=sim.completed_rounds)
        raise
    finally:
        sim.sim.executor.close()
    return _finish(run, sim, time.perf_counter() - wall0)


def _finish(run: Run, sim, wall_s: float) -> RunOutcome:
    run.metrics.flush()
    rows = run.metrics.round_table(list(RUN_KEYS))
    final = rows[-1] if rows else {}
    rounds = sim.completed_rounds
    done = sim.sim.stopped or rounds >= sim.plan.total_rounds
    totals = {"bytes_up": sum(r.get("bytes_up", 0) for r in rows), "bytes_down": sum(r.get("bytes_down", 0) for r in rows)}
    run.set_status("completed" if done else "stopped", completed_round=rounds,
                   final_accuracy=final.get("accuracy"), wall_s=round(wall_s, 3), **totals)
    if not done:
        raise StoreError(f"run {run.id} stalled at round {rounds} of {sim.plan.total_rounds}: "
                         f"no progress within {horizon_s(sim.config):.0f} virtual seconds (is the server crashed "
                         f"for good, or are too few clients alive for fl.min_completion?)")
    return RunOutcome(run, rounds, final, wall_s, done)
