"""A small lossy-WLAN model for one split-inference transfer (802.11a/g OFDM, DCF with retries).

Everything about *how the WLAN carries one tensor* lives here; what the tail makes of the
delivered fraction (accuracy) lives in ``mwjc.py``. One transfer sends a tensor of ``nbytes``
as UDP datagrams (``meshlearn.net.packetizer``: ``mtu - 28`` payload bytes each), one after the
other, each as one MAC frame (payload + 28 B IP/UDP + 36 B MAC header/LLC/FCS). No other
station contends: the channel is summarised by its SNR.

Packet error rate (per attempt)
    802.11a/g receivers must reach PER ≤ 10 % on 1000-octet frames at the minimum input
    sensitivity of each rate (IEEE Std 802.11-2012 §18.3.10.2, same figures in 802.11a-1999
    §17.3.10.1): −82, −81, −79, −77, −74, −70, −66, −65 dBm for 6 … 54 Mbit/s. Against the
    thermal floor of a 20 MHz channel (−174 dBm/Hz + 73 dB = −101 dBm) plus the standard's
    10 dB noise figure (−91 dBm), that is an SNR threshold of 9, 10, 12, 14, 17, 21, 25, 26 dB.
    Around each threshold we use a logistic waterfall (a curve fit, our choice; coded OFDM goes
    from 90 % to 10 % PER within a few dB):

        PER_1000(snr) = 1 / (1 + 9 · exp(slope · (snr − snr_threshold)))   (= 0.1 at threshold)

    and scale to an L-byte frame with independent bit errors: PER_L = 1 − (1 − PER_1000)^(L/1000).

Retries and latency (DCF timing of IEEE 802.11-2012 clause 18, 20 MHz)
    A frame is tried up to ``retry_limit + 1`` times; residual loss = PER^(R+1). Attempt i
    (0-based) costs DIFS + backoff + frame airtime, where the backoff is uniform in
    [0, CW_i] slots, CW_i = min(16 · 2^i − 1, 1023); a successful attempt adds SIFS + ACK (14 B
    at the highest basic rate ≤ the data rate, basic rates 6/12/24), a failed one the ACK
    timeout (SIFS + slot + 20 µs preamble). Airtime = 20 µs + 4 µs · ⌈(16 + 8·L + 6) / N_DBPS⌉.
    The transfer latency is the sum over its frames; a lost frame's elements are zero-filled.

SNR over time (optional)
    ``SnrProcess`` is a seeded Gauss–Markov (AR(1)) process in dB, the usual log-normal
    shadowing model with exponential correlation: snr_t = μ + ρ (snr_{t−1} − μ) + σ √(1−ρ²) ε_t.
    Its stationary law is N(μ, σ²); σ = 0 gives a fixed SNR.

Outputs per transfer: the fraction of tensor bytes delivered and the latency, either sampled
with an rng (``sample_transfers``, vectorised over many transfers) or as the analytic
expectation (``expected_transfer``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from meshlearn.errors import UsageError
from meshlearn.net.packetizer import DEFAULT_HEADER_BYTES, packet_sizes

__all__ = [
    "RATES_MBPS",
    "SNR_THRESHOLD_DB",
    "MAC_OVERHEAD_BYTES",
    "Dot11Timing",
    "WlanLink",
    "Transfer",
    "SnrProcess",
    "snr_threshold_db",
    "packet_error_rate",
    "frame_airtime_s",
    "frame_bytes",
    "expected_transfer",
    "sample_transfers",
    "latency_bounds_s",
]

RATES_MBPS: tuple[float, ...] = (6.0, 9.0, 12.0, 18.0, 24.0, 36.0, 48.0, 54.0)
# Minimum input sensitivity (dBm, PER 10 % at 1000 octets) + 91 dB → SNR threshold (dB).
SNR_THRESHOLD_DB: dict[float, float] = dict(zip(RATES_MBPS, (9.0, 10.0, 12.0, 14.0, 17.0, 21.0, 25.0, 26.0)))
_BITS_PER_SYMBOL = {rate: int(rate * 4) for rate in RATES_MBPS}  # N_DBPS: 4 µs symbols
_BASIC_RATES = (6.0, 12.0, 24.0)
MAC_OVERHEAD_BYTES = 36  # MAC header 24 + LLC/SNAP 8 + FCS 4
_ACK_BYTES = 14
_REF_BYTES = 1000  # frame length the sensitivity figures are specified at


@dataclass(frozen=True)
class Dot11Timing:
    """DCF / OFDM PHY timing constants of 802.11a (5 GHz, 20 MHz); 802.11g-only uses the same."""

    slot_s: float = 9e-6
    sifs_s: float = 16e-6
    preamble_s: float = 20e-6  # PLCP preamble 16 µs + SIGNAL 4 µs
    symbol_s: float = 4e-6
    cw_min: int = 15
    cw_max: int = 1023

    @property
    def difs_s(self) -> float:
        return self.sifs_s + 2 * self.slot_s

    @property
    def ack_timeout_s(self) -> float:
        return self.sifs_s + self.slot_s + self.preamble_s

    def contention_window(self, attempt: int) -> int:
        """CW of 0-based attempt ``attempt``: doubles from cw_min up to cw_max."""
        return min((self.cw_min + 1) * 2**attempt - 1, self.cw_max)


DOT11A = Dot11Timing()


def _check_rate(rate_mbps: float) -> float:
    rate = float(rate_mbps)
    if rate not in SNR_THRESHOLD_DB:
        raise UsageError(f"PHY rate {rate_mbps} Mbit/s is not an 802.11a/g OFDM rate; use one of {list(RATES_MBPS)}")
    return rate


def snr_threshold_db(rate_mbps: float) -> float:
    """SNR (dB) at which ``rate_mbps`` reaches 10 % PER on 1000-byte frames."""
    return SNR_THRESHOLD_DB[_check_rate(rate_mbps)]


def packet_error_rate(rate_mbps: float, snr_db, frame_len: int | np.ndarray, slope_per_db: float = 1.5):
    """Per-attempt error rate of a ``frame_len``-byte frame (logistic waterfall, length-scaled).

    ``snr_db`` and ``frame_len`` broadcast; returns a float or an array.
    """
    if slope_per_db <= 0:
        raise UsageError(f"slope_per_db must be > 0 (PER falls as SNR rises), got {slope_per_db}")
    x = slope_per_db * (np.asarray(snr_db, dtype=float) - snr_threshold_db(rate_mbps))
    per_ref = 1.0 / (1.0 + 9.0 * np.exp(np.clip(x, -700, 700)))
    per = -np.expm1(np.log1p(-per_ref) * (np.asarray(frame_len, dtype=float) / _REF_BYTES))
    return float(per) if np.ndim(per) == 0 else per


def frame_airtime_s(rate_mbps: float, nbytes: int | np.ndarray, timing: Dot11Timing = DOT11A):
    """PPDU duration of an ``nbytes`` MPDU at ``rate_mbps``: preamble + whole OFDM symbols."""
    bits = 16 + 8 * np.asarray(nbytes) + 6  # SERVICE + PSDU + tail
    symbols = -(-bits // _BITS_PER_SYMBOL[_check_rate(rate_mbps)])
    return timing.preamble_s + timing.symbol_s * symbols


def _ack_s(rate_mbps: float, timing: Dot11Timing) -> float:
    basic = max(r for r in _BASIC_RATES if r <= rate_mbps)
    return float(frame_airtime_s(basic, _ACK_BYTES, timing))


def frame_bytes(nbytes: int, mtu: int, header_bytes: int = DEFAULT_HEADER_BYTES) -> np.ndarray:
    """MPDU length of each frame carrying an ``nbytes`` tensor (payload + IP/UDP + MAC overhead)."""
    return packet_sizes(nbytes, mtu, header_bytes) + header_bytes + MAC_OVERHEAD_BYTES


@dataclass(frozen=True)
class WlanLink:
    """Link parameters the controller picks (rate, retry limit) plus the fixed PHY/MAC setup."""

    rate_mbps: float
    retry_limit: int
    mtu: int = 1500
    header_bytes: int = DEFAULT_HEADER_BYTES
    slope_per_db: float = 1.5
    timing: Dot11Timing = DOT11A

    def __post_init__(self) -> None:
        _check_rate(self.rate_mbps)
        if int(self.retry_limit) != self.retry_limit or not 0 <= self.retry_limit <= 15:
            raise UsageError(f"retry_limit must be an integer in [0, 15] (MAC retry counter), got {self.retry_limit}")
        if self.mtu + MAC_OVERHEAD_BYTES > 2346:
            raise UsageError(f"mtu {self.mtu} gives frames above the 802.11 MPDU limit (2346 B); use mtu <= 2310")

    @property
    def attempts(self) -> int:
        return int(self.retry_limit) + 1


@dataclass(frozen=True)
class Transfer:
    """One transfer (or many, as arrays): fraction of tensor bytes delivered and latency (s)."""

    delivered_fraction: float | np.ndarray
    latency_s: float | np.ndarray


def _per_frame(link: WlanLink, frames: np.ndarray, snr_db) -> np.ndarray:
    """Per-attempt PER of each frame; shape (..., frames) when ``snr_db`` is an array."""
    snr = np.asarray(snr_db, dtype=float)[..., None]
    return np.asarray(packet_error_rate(link.rate_mbps, snr, frames, link.slope_per_db))


def expected_transfer(link: WlanLink, nbytes: int, snr_db: float) -> Transfer:
    """Analytic expectation at a fixed SNR: E[delivered fraction] and E[latency]."""
    t, payload = link.timing, packet_sizes(nbytes, link.mtu, link.header_bytes)
    frames = payload + link.header_bytes + MAC_OVERHEAD_BYTES
    q = _per_frame(link, frames, snr_db)  # (frames,)
    reach = q[:, None] ** np.arange(link.attempts)  # P(attempt i happens)
    backoff = np.array([t.contention_window(i) / 2 * t.slot_s for i in range(link.attempts)])
    per_attempt = t.difs_s + backoff + np.asarray(frame_airtime_s(link.rate_mbps, frames, t))[:, None]
    ending = q[:, None] * t.ack_timeout_s + (1 - q[:, None]) * (t.sifs_s + _ack_s(link.rate_mbps, t))
    latency = float((reach * (per_attempt + ending)).sum())
    delivered = 1.0 - q**link.attempts
    fraction = float((delivered * payload).sum() / max(int(payload.sum()), 1)) if nbytes else float(delivered[0])
    return Transfer(fraction, latency)


def sample_transfers(link: WlanLink, nbytes: int, snr_db, rng: np.random.Generator,
                     size: int | None = None) -> Transfer:
    """Sample ``size`` independent transfers (scalars when ``size`` is None).

    ``snr_db`` is one SNR or an array of ``size`` SNRs (one per transfer).
    """
    n = 1 if size is None else int(size)
    payload = packet_sizes(nbytes, link.mtu, link.header_bytes)
    frames = payload + link.header_bytes + MAC_OVERHEAD_BYTES
    q = np.broadcast_to(_per_frame(link, frames, snr_db), (n, frames.size))
    tries = rng.geometric(np.clip(1.0 - q, 1e-12, 1.0))  # attempts until the first success
    ok = tries <= link.attempts
    used = np.minimum(tries, link.attempts)  # (n, frames)
    latency = _sampled_latency(link, frames, used, ok, rng)
    weights = payload / max(int(payload.sum()), 1) if nbytes else np.ones(1)
    fraction = ok @ weights
    if size is None:
        return Transfer(float(fraction[0]), float(latency[0]))
    return Transfer(fraction, latency)


def _sampled_latency(link: WlanLink, frames: np.ndarray, used: np.ndarray, ok: np.ndarray,
                     rng: np.random.Generator) -> np.ndarray:
    """Latency of each transfer from the attempts each frame used and whether it got through."""
    t = link.timing
    cw = np.array([t.contention_window(i) for i in range(link.attempts)])
    slots = np.floor(rng.random(used.shape + (link.attempts,)) * (cw + 1))  # uniform in [0, CW_i]
    happened = np.arange(link.attempts) < used[..., None]
    backoff_s = (slots * happened).sum(axis=-1) * t.slot_s
    airtime = np.asarray(frame_airtime_s(link.rate_mbps, frames, t))
    failed = used - ok
    per_frame = (used * (t.difs_s + airtime) + backoff_s + failed * t.ack_timeout_s
                 + ok * (t.sifs_s + _ack_s(link.rate_mbps, t)))
    return per_frame.sum(axis=-1)


class SnrProcess:
    """Seeded Gauss–Markov SNR in dB: AR(1) around ``mean_db`` with stationary std ``std_db``.

    ``correlation`` is ρ between consecutive steps (0 = i.i.d. draws, near 1 = slow drift). The
    first ``step`` draws from the stationary law. The process never owns randomness.
    """

    def __init__(self, mean_db: float, std_db: float = 0.0, correlation: float = 0.9):
        if std_db < 0 or not 0.0 <= correlation < 1.0:
            raise UsageError(f"SnrProcess needs std_db >= 0 and 0 <= correlation < 1, got {std_db}, {correlation}")
        self.mean_db, self.std_db, self.correlation = float(mean_db), float(std_db), float(correlation)
        self._last: float | None = None

    def step(self, rng: np.random.Generator) -> float:
        """The SNR of the next transfer."""
        if self.std_db == 0.0:
            return self.mean_db
        if self._last is None:
            self._last = self.mean_db + self.std_db * float(rng.standard_normal())
        else:
            innovation = self.std_db * math.sqrt(1 - self.correlation**2) * float(rng.standard_normal())
            self._last = self.mean_db + self.correlation * (self._last - self.mean_db) + innovation
        return self._last

    def stationary(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """``size`` independent draws from the stationary law N(mean_db, std_db²)."""
        return self.mean_db + self.std_db * rng.standard_normal(size)


def latency_bounds_s(link: WlanLink, nbytes: int) -> tuple[float, float]:
    """Smallest and largest possible transfer latency: every frame through at once with no
    backoff, versus every attempt failing after the longest backoff (known a priori, no sampling)."""
    t, frames = link.timing, frame_bytes(nbytes, link.mtu, link.header_bytes)
    airtime = np.asarray(frame_airtime_s(link.rate_mbps, frames, t))
    best = float((t.difs_s + airtime + t.sifs_s + _ack_s(link.rate_mbps, t)).sum())
    backoff_s = sum(t.contention_window(i) for i in range(link.attempts)) * t.slot_s
    worst = float((link.attempts * (t.difs_s + airtime + t.ack_timeout_s) + backoff_s).sum())
    return best, worst
