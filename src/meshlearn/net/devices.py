"""Device profiles: how fast a participant computes and how much bandwidth it has.

A ``DeviceProfile`` is plain data. Named heterogeneity distributions in ``DEVICE_DISTRIBUTIONS``
draw ``n`` profiles from a seeded ``rng``: compute and bandwidth are lognormal around a median
(``median * exp(sigma * N(0, 1))``), independently per device and per quantity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from meshlearn.errors import ConfigError, UsageError
from meshlearn.registry import Registry

__all__ = [
    "DeviceProfile",
    "DEVICE_DISTRIBUTIONS",
    "draw_profiles",
    "server_profile",
    "compute_time",
    "lognormal_profiles",
]

MBIT = 1e6


@dataclass(frozen=True)
class DeviceProfile:
    """Compute speed (FLOP/s), uplink and downlink (bit/s), and fraction of time online."""

    flops: float
    up_bps: float
    down_bps: float
    availability: float = 1.0

    def __post_init__(self) -> None:
        for name in ("flops", "up_bps", "down_bps"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise UsageError(f"DeviceProfile.{name} must be a positive finite number, got {value}")
        if not 0.0 <= self.availability <= 1.0:
            raise UsageError(f"DeviceProfile.availability is a fraction in [0, 1], got {self.availability}")


DistributionFn = Callable[[int, np.random.Generator], list[DeviceProfile]]
DEVICE_DISTRIBUTIONS: Registry[DistributionFn] = Registry("device_distributions")


def lognormal_profiles(
    n: int, rng: np.random.Generator, flops: float, up_bps: float, down_bps: float, sigma: float
) -> list[DeviceProfile]:
    """``n`` profiles with each quantity lognormal around the given median with spread ``sigma``."""
    if n < 0:
        raise UsageError(f"n must be >= 0, got {n}")
    medians = np.array([flops, up_bps, down_bps])
    draws = medians * np.exp(sigma * rng.standard_normal((n, 3)))
    return [DeviceProfile(float(f), float(u), float(d)) for f, u, d in draws]


@DEVICE_DISTRIBUTIONS.register("uniform")
def uniform(n: int, rng: np.random.Generator) -> list[DeviceProfile]:
    """All devices identical: 1 GFLOP/s, 10 Mbit/s up, 50 Mbit/s down."""
    return lognormal_profiles(n, rng, 1e9, 10 * MBIT, 50 * MBIT, sigma=0.0)


@DEVICE_DISTRIBUTIONS.register("iot")
def iot(n: int, rng: np.random.Generator) -> list[DeviceProfile]:
    """Microcontroller-class: ~0.2 GFLOP/s, ~1 Mbit/s up, ~5 Mbit/s down, sigma 0.5."""
    return lognormal_profiles(n, rng, 2e8, 1 * MBIT, 5 * MBIT, sigma=0.5)


@DEVICE_DISTRIBUTIONS.register("mobile")
def mobile(n: int, rng: np.random.Generator) -> list[DeviceProfile]:
    """Phones: ~2 GFLOP/s, ~5 Mbit/s up, ~20 Mbit/s down, sigma 0.7."""
    return lognormal_profiles(n, rng, 2e9, 5 * MBIT, 20 * MBIT, sigma=0.7)


@DEVICE_DISTRIBUTIONS.register("edge")
def edge(n: int, rng: np.random.Generator) -> list[DeviceProfile]:
    """Edge servers: ~20 GFLOP/s, ~100 Mbit/s both ways, sigma 0.1."""
    return lognormal_profiles(n, rng, 2e10, 100 * MBIT, 100 * MBIT, sigma=0.1)


def server_profile() -> DeviceProfile:
    """A data-centre server: 100 GFLOP/s, 1 Gbit/s both ways, always on."""
    return DeviceProfile(flops=1e11, up_bps=1e9, down_bps=1e9)


def draw_profiles(name: str, n: int, rng: np.random.Generator) -> list[DeviceProfile]:
    """Draw ``n`` profiles from the registered distribution ``name``."""
    if name not in DEVICE_DISTRIBUTIONS.names():
        raise ConfigError("devices.distribution", f"unknown distribution {name!r}", DEVICE_DISTRIBUTIONS.names())
    return DEVICE_DISTRIBUTIONS.get(name)(n, rng)


def compute_time(profile: DeviceProfile, flops: float) -> float:
    """Seconds ``profile`` needs for ``flops`` floating-point operations."""
    if flops < 0:
        raise UsageError(f"flops must be >= 0, got {flops}")
    return float(flops) / profile.flops
