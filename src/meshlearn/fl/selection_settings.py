"""Typed settings for client selection and fluctuating device resources. Each model maps to one config section.

``SelectionSettings.make_selector`` builds the selector. ``DynamicsSettings.make_process`` builds
the ``ResourceProcess`` that the Network and the Simulator read device profiles from.
``cost_model`` turns the model and the local work into the ``CostModel`` that FedCS and Oort use to
estimate round times from what clients report. This module does not import torch, so the config
layer can load it without the learning stack.
"""

from __future__ import annotations

import math
from typing import Literal, Mapping

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from meshlearn.errors import UsageError
from meshlearn.fl.selection import SELECTORS, CostModel, Selector, make_selector
from meshlearn.net.devices import DeviceProfile
from meshlearn.net.dynamics import ResourceProcess

__all__ = ["SelectionSettings", "FedCSSettings", "MABSettings", "OortSettings", "DynamicsSettings", "cost_model"]

TRAIN_FLOPS_FACTOR = 3  # forward + backward ≈ 3 × forward; the same as meshlearn.models.zoo


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FedCSSettings(_Strict):
    """FedCS (Nishio & Yonetani, ICC 2019): deadline greedy on the resources clients report."""

    request_fraction: float = Field(0.3, gt=0, le=1, description="share of clients asked for resources each "
                                                                 "round (the paper's C); the greedy picks among them. "
                                                                 "1 = always the same fastest k (little data diversity)")
    uploads: Literal["parallel", "sequential"] = Field(
        "parallel", description="time model: parallel = own uplink per client (as the simulator does), "
                                "sequential = updates share one uplink in turn (the paper's model)")


class MABSettings(_Strict):
    """A bandit on observed round times under the round deadline (after Yoshida et al. 2020)."""

    objective: Literal["throughput", "time"] = Field(
        "throughput", description="rank clients that fit the deadline by optimistic samples per second "
                                  "(throughput) or by optimistic round time alone (time: the FedCS greedy)")
    time_floor: float = Field(0.05, gt=0, le=1, description="throughput: optimistic times are floored at this "
                                                            "share of the deadline")

    exploration: float = Field(0.05, ge=0, description="UCB width c in mean τ − c·sqrt(ln N / n), τ = time/deadline; "
                                                        "an explored straggler costs the whole round, keep it small")
    discount: float = Field(0.99, gt=0, le=1, description="per-round decay of the time statistics; < 1 follows "
                                                          "fluctuating resources, 1 = plain UCB")


class OortSettings(_Strict):
    """Oort (Lai et al., OSDI 2021): utility × speed penalty, ε-greedy, pacer. Defaults follow the spec."""

    alpha: float = Field(2.0, ge=0, description="round penalty: utility × (T/t)^alpha for clients slower than T")
    epsilon: float = Field(0.9, ge=0, le=1, description="initial exploration share ε")
    epsilon_decay: float = Field(0.95, gt=0, le=1, description="ε is multiplied by this every round")
    epsilon_min: float = Field(0.2, ge=0, le=1, description="floor of ε while unexplored clients remain")
    cut_off: float = Field(0.7, ge=0, le=1, description="exploit only clients scoring >= cut_off × the k-th best")
    clip: float = Field(0.98, gt=0, le=1, description="rewards are clipped at this quantile")
    staleness: float = Field(0.1, ge=0, description="staleness bonus sqrt(staleness · ln R / L)")
    percentile: float = Field(30.0, gt=0, le=100, description="preferred duration T = this percentile of known "
                                                              "client durations (100 = no penalty)")
    pacer_step: int = Field(20, ge=1, description="the pacer looks at the utility every this many rounds")
    pacer_delta: float = Field(5.0, ge=0, description="percentile points the pacer moves T by")
    sample_window: float = Field(5.0, ge=1, description="exploration samples from the top sample_window × n "
                                                        "unexplored clients by data size")


class DynamicsSettings(_Strict):
    """Fluctuating resources (meshlearn.net.dynamics): Markov throughput classes + lognormal compute jitter."""

    enabled: bool = Field(False, description="clients' compute and bandwidth change over time; false = static")
    period_s: float = Field(60.0, gt=0, description="virtual seconds between redraws of each client's state")
    classes: list[float] = Field([0.2, 0.5, 1.0], min_length=1, description="bandwidth multipliers of the "
                                                                            "throughput classes")
    stay: float = Field(0.8, ge=0, le=1, description="probability a client keeps its class into the next period")
    jitter: float = Field(0.3, ge=0, description="lognormal sigma of the per-period compute-speed multiplier")

    @field_validator("classes")
    @classmethod
    def _positive(cls, value: list[float]) -> list[float]:
        if not all(c > 0 and math.isfinite(c) for c in value):
            raise ValueError(f"classes are positive multipliers, got {value}")
        return value

    def make_process(self, base: Mapping[str, DeviceProfile],
                     seed_seq: np.random.SeedSequence) -> ResourceProcess | None:
        """The process over ``base`` (the clients; leave the server out), or None when disabled."""
        if not self.enabled:
            return None
        return ResourceProcess(base, seed_seq, period_s=self.period_s, classes=self.classes, stay=self.stay,
                               jitter=self.jitter)


class SelectionSettings(_Strict):
    """Which clients train each round, and how resources fluctuate."""

    selector: str = Field("random", description="client selector: random, fedcs, mab, oort (or a plugin name)")
    clients_per_round: int | None = Field(None, ge=1, description="fixed k per round; unset = ⌈fl.fraction · "
                                                                  "clients⌉")
    deadline_s: float | None = Field(None, gt=0, description="round deadline for the server and the deadline-aware "
                                                             "selectors; unset = fl.round_deadline_s")
    miss_factor: float = Field(2.0, ge=1, description="mab/oort: a missed deadline counts as a round time of "
                                                      "miss_factor × deadline")
    target_accuracy: float | None = Field(None, gt=0, le=1, description="accuracy for the time-to-accuracy metric")
    fedcs: FedCSSettings = Field(default_factory=FedCSSettings, description="fedcs parameters")
    mab: MABSettings = Field(default_factory=MABSettings, description="mab parameters")
    oort: OortSettings = Field(default_factory=OortSettings, description="oort parameters")
    dynamics: DynamicsSettings = Field(default_factory=DynamicsSettings, description="fluctuating resources")

    @field_validator("selector")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in SELECTORS.names():
            raise ValueError(f"unknown selector {value!r} (valid: {', '.join(SELECTORS.names())})")
        return value

    def make_selector(self, *, deadline_s: float, cost: CostModel | None = None) -> Selector:
        """The configured selector. ``deadline_s`` is the server's round deadline. FedCS needs ``cost``."""
        name = self.selector
        if name == "random":
            return make_selector("random")
        if name == "fedcs":
            if cost is None:
                raise UsageError("the fedcs selector estimates round times: pass cost=cost_model(...)")
            return make_selector("fedcs", deadline_s=deadline_s, cost=cost, **self.fedcs.model_dump())
        if name == "mab":
            return make_selector("mab", deadline_s=deadline_s, miss_factor=self.miss_factor, **self.mab.model_dump())
        if name == "oort":
            return make_selector("oort", deadline_s=deadline_s, cost=cost, miss_factor=self.miss_factor,
                                 **self.oort.model_dump())
        return make_selector(name, deadline_s=deadline_s, cost=cost)  # plugins take these two keywords


def cost_model(params: Mapping[str, np.ndarray], forward_flops_per_sample: float, epochs: int,
               overhead_s: float = 0.0) -> CostModel:
    """The CostModel of one FedAvg round: fp32 parameters down and up, 3 × forward FLOPs per sample per epoch."""
    bits = 8.0 * sum(np.asarray(p).nbytes for p in params.values())
    return CostModel(bits, TRAIN_FLOPS_FACTOR * float(forward_flops_per_sample) * epochs, overhead_s)
