"""Simulated malicious clients, to measure what the aggregation rules (``meshlearn.fl.aggregate``) withstand.

An attack is a pure function ``attack(current, trained, rng, *, strength) -> params``: ``current`` is
the global model the server sent, ``trained`` what honest local training made of it; the result is
what the attacker uploads instead. With the delta d = trained − current:

    scale      current + strength · d                     default strength 1000 (1e30: the issue's "huge update")
    sign_flip  current − strength · d                     default 4: pushes against the honest direction
    random     current + Gaussian noise, per tensor of    default 100
               std strength · RMS(d)

Every result is finite float32, so ``check_update`` accepts it: only the aggregation rule stands in
the way. ``MaliciousClient`` is an ``FLClient`` that trains like an honest one (same timing, same
bytes) and uploads the attacked parameters. ``AttackSettings`` is the ``[attack]`` section that
makes the named clients of a FedAvg/FedProx run malicious (simulations, or a red-team ``join``).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from meshlearn.fl.client import FLClient
from meshlearn.node import Context
from meshlearn.registry import Registry

__all__ = ["ATTACKS", "AttackSettings", "MaliciousClient", "random_noise", "scale", "sign_flip"]

Params = dict[str, np.ndarray]
Attack = Callable[..., Params]  # (current, trained, rng, *, strength) -> params
ATTACKS: Registry[Attack] = Registry("attacks")
_F32_MAX = float(np.finfo(np.float32).max)


def _finite32(values: np.ndarray) -> np.ndarray:
    """float32, saturated below float32's largest value (a huge but finite, accepted update)."""
    return np.clip(values, -_F32_MAX, _F32_MAX).astype(np.float32)


def _delta(current: Params, trained: Params, key: str) -> np.ndarray:
    return np.asarray(trained[key], np.float64) - np.asarray(current[key], np.float64)


@ATTACKS.register("scale")
def scale(current: Params, trained: Params, rng: np.random.Generator, *, strength: float = 1e3) -> Params:
    """The honest update multiplied by ``strength`` (model replacement / boosting)."""
    return {k: _finite32(current[k] + strength * _delta(current, trained, k)) for k in current}


@ATTACKS.register("sign_flip")
def sign_flip(current: Params, trained: Params, rng: np.random.Generator, *, strength: float = 4.0) -> Params:
    """The honest update reversed and multiplied by ``strength``."""
    return {k: _finite32(current[k] - strength * _delta(current, trained, k)) for k in current}


@ATTACKS.register("random")
def random_noise(current: Params, trained: Params, rng: np.random.Generator, *, strength: float = 100.0) -> Params:
    """Gaussian noise around ``current``, ``strength`` times the RMS of the honest update per tensor."""
    out = {}
    for k in current:
        rms = float(np.sqrt(np.mean(_delta(current, trained, k) ** 2)))
        out[k] = _finite32(current[k] + rng.normal(0.0, strength * rms, np.shape(current[k])))
    return out


class MaliciousClient(FLClient):
    """Trains like an honest FLClient, then uploads ``attack(current, trained, ctx.rng)`` instead."""

    def __init__(self, node_id: str, server: str, attack: Callable[[Params, Params, np.random.Generator], Params],
                 **kwargs):
        super().__init__(node_id, server, **kwargs)
        self.attack = attack
        self.current: Params | None = None  # the global model of the round being worked on

    def _on_round(self, ctx: Context, msg) -> None:
        super()._on_round(ctx, msg)
        self.current = msg.tensors

    def on_task_done(self, ctx: Context, task_id: int, result) -> None:
        if task_id == self.task_id and self.current is not None:
            result = dataclasses.replace(result, params=self.attack(self.current, result.params, ctx.rng))
        super().on_task_done(ctx, task_id, result)


class AttackSettings(BaseModel):
    """Simulated malicious clients (``[attack]``), for measuring robust aggregation (fl.aggregator)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    clients: list[str] = Field([], description="ids of the malicious clients, e.g. [\"client-00\", \"client-01\"]; "
                                               "[] = every client is honest")
    kind: str = Field("scale", description="what they upload instead of their update d: scale (current + strength·d), "
                                           "sign_flip (current − strength·d), random (Gaussian noise of std "
                                           "strength · RMS(d) around current)")
    strength: float | None = Field(None, gt=0, allow_inf_nan=False,
                                   description="the attack's factor; unset = the kind's default (scale 1000, "
                                               "sign_flip 4, random 100)")

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        if value not in ATTACKS:
            raise ValueError(f"unknown attack {value!r} (valid: {', '.join(ATTACKS.names())})")
        return value

    def attack(self) -> Callable[[Params, Params, np.random.Generator], Params]:
        """The configured attack with its strength bound: ``(current, trained, rng) -> params``."""
        options = {} if self.strength is None else {"strength": self.strength}
        return functools.partial(ATTACKS.get(self.kind), **options)

    def client(self, node_id: str, server: str, **kwargs) -> FLClient:
        """The client node ``node_id``: malicious if listed in ``clients``, an honest FLClient otherwise."""
        if node_id in self.clients:
            return MaliciousClient(node_id, server, self.attack(), **kwargs)
        return FLClient(node_id, server, **kwargs)
