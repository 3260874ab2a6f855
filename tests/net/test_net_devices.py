"""Device profiles: named heterogeneity distributions and compute time."""

import numpy as np
import pytest

from meshlearn.errors import ConfigError, UsageError
from meshlearn.net.devices import (
    DEVICE_DISTRIBUTIONS,
    DeviceProfile,
    compute_time,
    draw_profiles,
    server_profile,
)


def test_uniform_profiles_are_identical():
    profiles = draw_profiles("uniform", 5, np.random.default_rng(0))
    assert profiles == [DeviceProfile(1e9, 10e6, 50e6)] * 5


@pytest.mark.parametrize(
    "name, flops, up, down, sigma",
    [("iot", 2e8, 1e6, 5e6, 0.5), ("mobile", 2e9, 5e6, 20e6, 0.7), ("edge", 2e10, 1e8, 1e8, 0.1)],
)
def test_lognormal_distributions_have_configured_median_and_spread(name, flops, up, down, sigma):
    profiles = draw_profiles(name, 4000, np.random.default_rng(1))
    for attr, median in (("flops", flops), ("up_bps", up), ("down_bps", down)):
        logs = np.log([getattr(p, attr) for p in profiles])
        assert abs(np.exp(np.median(logs)) / median - 1) < 0.05
        assert abs(logs.std() / sigma - 1) < 0.05
    assert all(p.availability == 1.0 for p in profiles)


def test_draws_are_seeded():
    a = draw_profiles("mobile", 10, np.random.default_rng(9))
    assert a == draw_profiles("mobile", 10, np.random.default_rng(9))
    assert a != draw_profiles("mobile", 10, np.random.default_rng(10))


def test_server_and_compute_time():
    server = server_profile()
    assert (server.flops, server.up_bps, server.down_bps) == (1e11, 1e9, 1e9)
    assert compute_time(server, 5e11) == pytest.approx(5.0)
    assert compute_time(DeviceProfile(2e8, 1e6, 1e6), 1e8) == pytest.approx(0.5)
    with pytest.raises(UsageError):
        compute_time(server, -1)


def test_invalid_profiles_and_names():
    with pytest.raises(UsageError, match="flops"):
        DeviceProfile(0, 1, 1)
    with pytest.raises(UsageError, match="availability"):
        DeviceProfile(1, 1, 1, availability=1.5)
    with pytest.raises(ConfigError) as info:
        draw_profiles("quantum", 3, np.random.default_rng(0))
    assert set(info.value.choices) == {"uniform", "iot", "mobile", "edge"} == set(DEVICE_DISTRIBUTIONS.names())
