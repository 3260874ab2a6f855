"""Fluctuating device resources: each device's compute speed and bandwidth as they change over time.

A ``ResourceProcess`` answers ``profile_at(node, t)``. The answer is the node's base ``DeviceProfile``
with its compute speed and its up/down bandwidth multiplied by factors. The factors change once per
period of ``period_s`` virtual seconds:

* bandwidth: a Markov chain over throughput classes. A class is a multiplier such as 0.2, 0.5 or 1.0.
  In period 0 the class is drawn uniformly. In each later period the chain keeps the previous class
  with probability ``stay``; otherwise it draws a class uniformly, which may be the same one again.
  One class scales both the uplink and the downlink.
* compute: lognormal jitter ``exp(jitter * N(0, 1))`` (median 1), drawn fresh each period.

Everything drawn for a (node, period) pair comes from a Generator keyed on the root ``SeedSequence``
and on a SHA-256 of the node's name and the period number. ``meshlearn.net.network.pair_rng`` seeds
links the same way. So an answer never depends on which nodes or times were asked about before.
Nodes without a base profile here, the server for example, get ``None``, and the runtime keeps their
static profile.

Runtimes sample a profile when an activity starts. A task runs at the compute speed of the moment
it was submitted, and a transfer at the bandwidth of the moment it was sent.

``DynamicsSettings`` is the config section (``[selection.dynamics]``) that builds the process.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import replace
from typing import Mapping, Protocol, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from meshlearn.errors import UsageError
from meshlearn.net.devices import DeviceProfile

__all__ = ["DeviceDynamics", "DynamicsSettings", "ResourceProcess", "period_rng"]


class DeviceDynamics(Protocol):
    """What the Simulator and the Network ask when a run has time-varying devices."""

    def profile_at(self, node: str, t: float) -> DeviceProfile | None:
        """``node``'s profile at virtual time ``t``; None means "keep the static profile"."""
        ...


def keyed_rng(seed_seq: np.random.SeedSequence, *labels: object) -> np.random.Generator:
    """A Generator named by ``labels`` under ``seed_seq``: the same labels always give the same
    stream, and no stream depends on which others were drawn first (SHA-256 of the labels goes
    into the spawn key)."""
    digest = hashlib.sha256("\x00".join(map(str, labels)).encode()).digest()
    words = tuple(int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4))
    child = np.random.SeedSequence(seed_seq.entropy, spawn_key=(*seed_seq.spawn_key, *words))
    return np.random.default_rng(child)


def period_rng(seed_seq: np.random.SeedSequence, node: str, period: int) -> np.random.Generator:
    """Generator for ``node`` in ``period``, independent of every other (node, period) pair."""
    return keyed_rng(seed_seq, "dynamics", node, period)


class ResourceProcess:
    """Seeded, time-varying device profiles: Markov throughput classes plus lognormal compute jitter.

    ``base`` maps each fluctuating node to its nominal profile. Leave out nodes that must stay
    static, such as the server.
    """

    def __init__(
        self,
        base: Mapping[str, DeviceProfile],
        seed_seq: np.random.SeedSequence,
        *,
        period_s: float = 60.0,
        classes: Sequence[float] = (0.2, 0.5, 1.0),
        stay: float = 0.8,
        jitter: float = 0.3,
    ):
        _check(period_s, classes, stay, jitter)
        self.base = dict(base)
        self.seed_seq = seed_seq
        self.period_s, self.classes = float(period_s), tuple(float(c) for c in classes)
        self.stay, self.jitter = float(stay), float(jitter)
        self._chain: dict[str, list[tuple[int, float]]] = {}  # node -> (class, cpu) of periods 0..len-1
        self._profiles: dict[tuple[str, int], DeviceProfile] = {}

    def __contains__(self, node: object) -> bool:
        return node in self.base

    def period(self, t: float) -> int:
        """Index of the period that contains virtual time ``t`` (times before 0 count as period 0)."""
        return max(0, math.floor(t / self.period_s))

    def class_at(self, node: str, t: float) -> int:
        """Index into ``classes`` of ``node``'s throughput class at ``t``."""
        self._require(node)
        return self._state(node, self.period(t))[0]

    def factors(self, node: str, t: float) -> tuple[float, float]:
        """(bandwidth multiplier, compute multiplier) of ``node`` at ``t``."""
        self._require(node)
        cls, cpu = self._state(node, self.period(t))
        return self.classes[cls], cpu

    def profile_at(self, node: str, t: float) -> DeviceProfile | None:
        """``node``'s profile at ``t``: the base profile scaled by the period's factors."""
        if node not in self.base:
            return None
        key = (node, self.period(t))
        if key not in self._profiles:
            bw, cpu = self.factors(node, t)
            b = self.base[node]
            self._profiles[key] = replace(b, flops=b.flops * cpu, up_bps=b.up_bps * bw, down_bps=b.down_bps * bw)
        return self._profiles[key]

    # ----- the per-(node, period) draws ----------------------------------------------------
    def _state(self, node: str, period: int) -> tuple[int, float]:
        """(class index, compute multiplier) of ``node`` in ``period``; walks the chain up to it once."""
        chain = self._chain.setdefault(node, [])
        while len(chain) <= period:
            p = len(chain)
            rng = period_rng(self.seed_seq, node, p)
            u_stay, u_class, z = rng.random(), rng.random(), rng.standard_normal()
            fresh = min(int(u_class * len(self.classes)), len(self.classes) - 1)
            cls = chain[-1][0] if p > 0 and u_stay < self.stay else fresh
            chain.append((cls, float(math.exp(self.jitter * z))))
        return chain[period]

    def _require(self, node: str) -> None:
        if node not in self.base:
            known = ", ".join(sorted(self.base)[:5]) + (" …" if len(self.base) > 5 else "")
            raise UsageError(f"node {node!r} has no fluctuating profile (known: {known or 'none'})")


def _check(period_s: float, classes: Sequence[float], stay: float, jitter: float) -> None:
    if not (period_s > 0 and math.isfinite(period_s)):
        raise UsageError(f"period_s must be a positive number of seconds, got {period_s}")
    if not classes or not all(c > 0 and math.isfinite(c) for c in classes):
        raise UsageError(f"classes must be a non-empty list of positive multipliers, got {list(classes)}")
    if not 0.0 <= stay <= 1.0:
        raise UsageError(f"stay is a probability in [0, 1], got {stay}")
    if not (jitter >= 0 and math.isfinite(jitter)):
        raise UsageError(f"jitter is a lognormal sigma >= 0, got {jitter}")


class DynamicsSettings(BaseModel):
    """Fluctuating resources: Markov throughput classes + lognormal compute jitter (``[selection.dynamics]``)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="clients' compute and bandwidth change over time; false = static")
    period_s: float = Field(60.0, gt=0, allow_inf_nan=False,
                            description="virtual seconds between redraws of each client's state")
    classes: list[float] = Field([0.2, 0.5, 1.0], min_length=1, description="bandwidth multipliers of the "
                                                                            "throughput classes")
    stay: float = Field(0.8, ge=0, le=1, description="probability a client keeps its class into the next period")
    jitter: float = Field(0.3, ge=0, allow_inf_nan=False,
                          description="lognormal sigma of the per-period compute-speed multiplier")

    @field_validator("classes")
    @classmethod
    def _positive(cls, value: list[float]) -> list[float]:
        if not all(c > 0 and math.isfinite(c) for c in value):
            raise ValueError(f"classes are positive multipliers, got {value}")
        return value

    @model_validator(mode="after")
    def _used(self) -> "DynamicsSettings":
        changed = [k for k, f in type(self).model_fields.items() if k != "enabled" and getattr(self, k) != f.default]
        if changed and not self.enabled:
            raise ValueError(f"{', '.join(changed)} set but enabled = false: nothing fluctuates; set enabled = true "
                             "or drop them")
        return self

    def make_process(self, base: Mapping[str, DeviceProfile],
                     seed_seq: np.random.SeedSequence) -> ResourceProcess | None:
        """The process over ``base`` (the clients; leave the server out), or None when disabled."""
        if not self.enabled:
            return None
        return ResourceProcess(base, seed_seq, period_s=self.period_s, classes=self.classes, stay=self.stay,
                               jitter=self.jitter)
