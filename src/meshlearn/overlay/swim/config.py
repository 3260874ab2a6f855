"""SWIM / Lifeguard settings, presets after hashicorp/memberlist, and the timeouts derived from N.

``SWIM_PRESETS``: ``lan`` (memberlist DefaultLANConfig), ``wan`` (DefaultWANConfig) and ``local``
(DefaultLocalConfig). The formulas follow memberlist's ``util.go`` (techniques-mizutani.md §5):

* suspicion min = suspicion_mult × max(1, log10 N) × probe_interval; max = max_mult × min;
* a suspicion timer starts at max and falls towards min as log(c+1)/log(k+1) of the k =
  suspicion_mult − 2 expected independent confirmations arrive;
* retransmit limit of a piggybacked update = retransmit_mult × ⌈log10(N + 1)⌉.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field, model_validator

from meshlearn.errors import ConfigError

__all__ = ["SwimConfig", "SWIM_PRESETS", "swim_preset", "suspicion_bounds", "suspicion_timeout",
           "retransmit_limit"]


class SwimConfig(BaseModel):
    """Timing and size knobs of one SWIM member (all members of a cluster should agree)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    probe_interval_s: float = Field(1.0, gt=0, description="protocol period: one probe per member per period")
    probe_timeout_s: float = Field(0.5, gt=0, description="wait for a direct Ack before asking k others")
    indirect_checks: int = Field(3, ge=0, description="k: members asked to probe a silent target (PingReq)")
    probe_order: str = Field("round_robin", description="round_robin (shuffled list, SWIM §4.3) or random")
    gossip_interval_s: float = Field(0.2, gt=0, description="gossip round length while updates are queued")
    gossip_nodes: int = Field(3, ge=0, description="fanout: members sent queued updates each gossip round")
    retransmit_mult: int = Field(4, ge=1, description="piggyback each update this × ceil(log10(N+1)) times")
    suspicion_mult: int = Field(4, ge=2, description="suspicion min = this × max(1, log10 N) × probe interval")
    suspicion_max_mult: int = Field(6, ge=1, description="suspicion max = this × suspicion min (Lifeguard)")
    awareness_max: int = Field(8, ge=1, description="Lifeguard local health: probe times scale up to this ×")
    push_pull_interval_s: float = Field(30.0, gt=0, description="full-table sync with one random member")
    rejoin_interval_s: float = Field(30.0, gt=0, description="re-contact seeds and dead members (heals partitions)")
    dead_retention_s: float = Field(30.0, ge=0, description="keep gossiping about a dead member this long")
    max_packet_bytes: int = Field(1400, ge=200, le=65000, description="datagram payload ceiling (UDP MTU)")
    reserved_user_bytes: int = Field(300, ge=0, description="room kept in every packet for user broadcasts")

    @model_validator(mode="after")
    def _consistent(self) -> "SwimConfig":
        if self.probe_timeout_s >= self.probe_interval_s:
            raise ConfigError("probe_timeout_s", f"must be shorter than probe_interval_s ({self.probe_interval_s})")
        if self.probe_order not in ("round_robin", "random"):
            raise ConfigError("probe_order", f"unknown order {self.probe_order!r}", ["round_robin", "random"])
        if self.reserved_user_bytes > self.max_packet_bytes - 100:
            raise ConfigError("reserved_user_bytes", "leaves under 100 bytes for membership updates")
        return self


SWIM_PRESETS: dict[str, SwimConfig] = {
    "lan": SwimConfig(),
    "wan": SwimConfig(probe_interval_s=5.0, probe_timeout_s=3.0, gossip_interval_s=0.5, gossip_nodes=4,
                      suspicion_mult=6, push_pull_interval_s=60.0, rejoin_interval_s=60.0,
                      dead_retention_s=60.0),
    "local": SwimConfig(probe_timeout_s=0.2, gossip_interval_s=0.1, retransmit_mult=2, suspicion_mult=3,
                        push_pull_interval_s=15.0, rejoin_interval_s=15.0, dead_retention_s=15.0),
}


def swim_preset(name: str, **overrides) -> SwimConfig:
    """A preset by name, with field overrides (validated)."""
    if name not in SWIM_PRESETS:
        raise ConfigError("preset", f"unknown SWIM preset {name!r}", sorted(SWIM_PRESETS))
    return SwimConfig(**{**SWIM_PRESETS[name].model_dump(), **overrides})


def suspicion_bounds(config: SwimConfig, n: int) -> tuple[float, float]:
    """(min, max) suspicion timeout in seconds for a cluster of ``n`` members."""
    low = config.suspicion_mult * max(1.0, math.log10(max(n, 1))) * config.probe_interval_s
    return low, config.suspicion_max_mult * low


def suspicion_timeout(config: SwimConfig, n: int, confirmations: int) -> float:
    """Lifeguard's dynamic timeout after ``confirmations`` independent suspicions beyond the first."""
    low, high = suspicion_bounds(config, n)
    expected = max(config.suspicion_mult - 2, 1)
    frac = math.log(min(confirmations, expected) + 1.0) / math.log(expected + 1.0)
    return max(low, high - (high - low) * frac)


def retransmit_limit(config: SwimConfig, n: int) -> int:
    """How many times one update is piggybacked before it leaves the queue."""
    return config.retransmit_mult * max(1, math.ceil(math.log10(n + 1)))
