"""Gilbert–Elliott over 10^6 packets: measured loss rate and burst length vs configured, and the
vectorized sampler's speed against a per-packet Python Markov chain in the same script.

    python benchmarks/bench_gilbert.py [--packets 1000000]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from meshlearn.net import GilbertElliott


def runs_of_loss(mask: np.ndarray) -> np.ndarray:
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return np.flatnonzero(d == -1) - np.flatnonzero(d == 1)


def per_packet_chain(p: float, r: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """The textbook loop: one uniform draw per packet (the baseline)."""
    u = rng.random(n).tolist()
    out, bad = np.empty(n, bool), False
    for i in range(n):
        bad = (u[i] >= r) if bad else (u[i] < p)
        out[i] = bad
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--packets", type=int, default=1_000_000)
    n = ap.parse_args().packets
    results = []
    for loss, burst in [(0.05, 4.0), (0.3, 1.5), (0.01, 10.0)]:
        model = GilbertElliott.from_mean(loss, burst)
        t0 = time.perf_counter()
        mask = model.sample(n, np.random.default_rng(1))
        fast = time.perf_counter() - t0
        t0 = time.perf_counter()
        per_packet_chain(model.p, model.r, n, np.random.default_rng(1))
        slow = time.perf_counter() - t0
        results.append({"loss": loss, "burst": burst, "measured_loss": round(float(mask.mean()), 5),
                        "measured_burst": round(float(runs_of_loss(mask).mean()), 4),
                        "loss_error_pct": round(100 * abs(mask.mean() - loss) / loss, 2),
                        "burst_error_pct": round(100 * abs(runs_of_loss(mask).mean() - burst) / burst, 2),
                        "vectorized_s": round(fast, 4), "per_packet_loop_s": round(slow, 4),
                        "speedup": round(slow / fast, 1)})
    print(json.dumps({"benchmark": "gilbert_elliott", "packets": n, "results": results}))


if __name__ == "__main__":
    main()
