"""The lossy-WLAN model: PER against rate and SNR, retries against loss and latency, sampling."""

import numpy as np
import pytest

from meshlearn.errors import UsageError
from meshlearn.split.wlan import (
    RATES_MBPS,
    SnrProcess,
    WlanLink,
    expected_transfer,
    frame_airtime_s,
    frame_bytes,
    latency_bounds_s,
    packet_error_rate,
    sample_transfers,
)

TENSOR = 12_544  # 7x7x128 fp16


def test_per_is_ten_percent_at_the_sensitivity_snr_for_1000_byte_frames():
    assert packet_error_rate(6, 9.0, 1000) == pytest.approx(0.1)
    assert packet_error_rate(54, 26.0, 1000) == pytest.approx(0.1)
    assert packet_error_rate(54, 26.0, 2000) == pytest.approx(1 - 0.9**2)  # independent bit errors


def test_higher_rate_has_higher_per_at_fixed_snr():
    for snr in (12.0, 20.0, 25.0):
        per = [packet_error_rate(r, snr, 1536) for r in RATES_MBPS]
        assert all(a < b for a, b in zip(per, per[1:])), (snr, per)


def test_per_falls_as_snr_rises():
    per = packet_error_rate(36, np.array([15.0, 20.0, 25.0]), 1536)
    assert per[0] > per[1] > per[2]


def test_retries_lower_residual_loss_and_raise_latency():
    transfers = [expected_transfer(WlanLink(36, r), TENSOR, 20.0) for r in (0, 1, 3, 7)]
    delivered = [t.delivered_fraction for t in transfers]
    latency = [t.latency_s for t in transfers]
    assert all(a < b for a, b in zip(delivered, delivered[1:]))
    assert all(a < b for a, b in zip(latency, latency[1:]))
    q = packet_error_rate(36, 20.0, 1536)  # full frames dominate: residual loss ≈ PER^(R+1)
    assert 1 - transfers[1].delivered_fraction == pytest.approx(q**2, rel=0.1)


def test_clean_link_latency_is_frames_times_one_exchange():
    link, frames = WlanLink(54, 3), frame_bytes(TENSOR, 1500)
    t = link.timing
    one = t.difs_s + 7.5 * t.slot_s + frame_airtime_s(54, frames) + t.sifs_s + frame_airtime_s(24, 14)
    assert expected_transfer(link, TENSOR, 60.0).latency_s == pytest.approx(float(one.sum()))
    assert frame_airtime_s(6, 14) == pytest.approx(44e-6)  # the textbook 802.11a ACK at 6 Mbit/s
    assert len(frames) == 9 and frames[0] == 1472 + 28 + 36


def test_sampled_transfers_match_the_analytic_expectation():
    link = WlanLink(36, 1)
    sampled = sample_transfers(link, TENSOR, 20.0, np.random.default_rng(0), 20_000)
    exact = expected_transfer(link, TENSOR, 20.0)
    assert sampled.delivered_fraction.mean() == pytest.approx(exact.delivered_fraction, abs=0.005)
    assert sampled.latency_s.mean() == pytest.approx(exact.latency_s, rel=0.01)
    lo, hi = latency_bounds_s(link, TENSOR)
    assert lo <= sampled.latency_s.min() and sampled.latency_s.max() <= hi


def test_sampling_is_seeded_and_takes_one_snr_per_transfer():
    link = WlanLink(36, 0)
    a = sample_transfers(link, TENSOR, 20.0, np.random.default_rng(7))
    b = sample_transfers(link, TENSOR, 20.0, np.random.default_rng(7))
    assert a == b and isinstance(a.latency_s, float)
    per_snr = sample_transfers(link, TENSOR, np.array([10.0, 40.0]), np.random.default_rng(1), 2)
    assert per_snr.delivered_fraction.tolist() == [0.0, 1.0]


def test_snr_process_is_fixed_without_spread_and_stationary_with_it():
    assert SnrProcess(20.0).step(np.random.default_rng(0)) == 20.0
    proc, rng = SnrProcess(20.0, std_db=2.0, correlation=0.5), np.random.default_rng(3)
    walk = np.array([proc.step(rng) for _ in range(20_000)])
    assert walk.mean() == pytest.approx(20.0, abs=0.1) and walk.std() == pytest.approx(2.0, rel=0.05)
    assert np.corrcoef(walk[:-1], walk[1:])[0, 1] == pytest.approx(0.5, abs=0.03)


@pytest.mark.parametrize("kwargs", [dict(rate_mbps=11, retry_limit=0), dict(rate_mbps=54, retry_limit=-1),
                                    dict(rate_mbps=54, retry_limit=16), dict(rate_mbps=54, retry_limit=0, mtu=4000)])
def test_bad_link_parameters_are_rejected(kwargs):
    with pytest.raises(UsageError):
        WlanLink(**kwargs)


def test_bad_model_parameters_are_rejected():
    with pytest.raises(UsageError):
        packet_error_rate(54, 20.0, 1000, slope_per_db=0)
    with pytest.raises(UsageError):
        SnrProcess(20.0, std_db=1.0, correlation=1.0)
