"""Adding an experiment kind: one module that registers it (docs/guide.md, "Adding an experiment kind").

The ``lossprobe`` kind measures a packet-loss model: it draws packets through the model and records
the measured loss rate and mean burst length next to what the model promises. It gets the whole
run lifecycle for free: a run directory with the resolved config, run.json, run.log and metrics,
progress reports, `meshlearn runs show / export / compare`, one-line config errors. Run it:

    python examples/custom_kind.py

A package of your own registers the kind through an entry point instead:

    [project.entry-points."meshlearn.experiment_kinds"]
    lossprobe = "my_package.lossprobe:KIND"

after which `meshlearn run probe.toml` (with ``kind = "lossprobe"`` in the file) runs it.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from meshlearn.experiment.kinds import ExperimentKind, Outcome, RunContext, register
from meshlearn.net.loss import make_loss_model


class LossProbe(BaseModel):
    """Draw packets through a loss model and compare what it does with what it promises."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["lossprobe"] = Field("lossprobe", description="experiment kind")
    name: str = Field("lossprobe", description="run name in the run store")
    seed: int = Field(0, ge=0, description="seed of the packet draws")
    loss: dict[str, Any] = Field({"model": "gilbert_elliott", "loss": 0.05, "burst": 4},
                                 description="the loss model, as in network.uplink_loss")
    packets: int = Field(200_000, ge=1000, description="packets to draw")
    chunks: int = Field(10, ge=1, description="progress reports (the draw is split into this many chunks)")


class Probe:
    """A prepared probe: ``run`` draws, records the metrics and says how it ended."""

    def __init__(self, cfg: LossProbe, state: Any = None):
        self.cfg, self.model = cfg, make_loss_model(cfg.loss)  # a bad loss model fails here, before any run exists
        self.total = cfg.chunks

    def run(self, ctx: RunContext) -> Outcome:
        rng, size = np.random.default_rng(self.cfg.seed), self.cfg.packets // self.cfg.chunks
        lost = []
        for chunk in range(1, self.cfg.chunks + 1):
            lost.append(self.model.sample(size, rng))
            ctx.run.metrics.log("loss_rate", float(np.mean(lost[-1])), round=chunk)
            ctx.progress(chunk, {"loss_rate": float(np.mean(lost[-1]))})
        mask = np.concatenate(lost)
        starts = np.flatnonzero(mask[1:] & ~mask[:-1]).size + int(mask[0])
        measured = {"measured_loss": float(mask.mean()), "promised_loss": self.model.mean_loss,
                    "mean_burst": float(mask.sum() / max(starts, 1))}
        ctx.run.metrics.log_many(dict(key=k, value=v) for k, v in measured.items())
        return Outcome("completed", measured)

    def close(self) -> None:
        pass


def summary(run) -> list[tuple[str, str]]:
    info = run.reload()
    return [(key, f"{info[key]:.4f}") for key in ("measured_loss", "promised_loss", "mean_burst") if key in info]


KIND = ExperimentKind(
    "lossprobe", "measure a packet-loss model against its promise", config=lambda: LossProbe, prepare=Probe,
    describe=lambda cfg: {"model": cfg.loss.get("model")}, summary=summary,
    headline=lambda run, target: {key: run.info.get(key) for key in ("measured_loss", "mean_burst")}, step="chunk")

if __name__ == "__main__":
    import tempfile

    from meshlearn.experiment import parse_experiment, run_experiment
    from meshlearn.store import RunStore

    register(KIND)  # an installed package is found through its entry point instead
    config = parse_experiment({"kind": "lossprobe", "loss": {"model": "gilbert_elliott", "loss": 0.1, "burst": 3}})
    run = run_experiment(config, RunStore(tempfile.mkdtemp()))
    print(f"lossprobe: {run.info['status']}, measured {run.info['measured_loss']:.4f} of a promised "
          f"{run.info['promised_loss']:.4f}, mean burst {run.info['mean_burst']:.2f}")
