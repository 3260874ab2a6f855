"""MWJC: does the UCB controller pick the best (rate, retry limit, model variant) arm?

Issue 5 bar: the best arm (known from exhaustive Monte Carlo evaluation of every arm) is picked in
≥ 80 % of the last half of 2,000 rounds. Default scenario (``MwjcSettings()``): 802.11a/g at a
fixed 20 dB SNR, a 12,544-byte split tensor (7x7x128 fp16, 9 frames at MTU 1500), 8 rates ×
retry limits {0, 1, 3, 7} × 4 model variants (plain, COMtune p = 0.3/0.5/0.7, PLACEHOLDER curves)
= 128 arms, reward = accuracy at the sampled delivered fraction − λ·latency with λ = 50 /s.
Each bonus scale runs on the same seeds:

* ``none``: plain UCB1, bonus sqrt(2 ln n / n_i) on raw rewards;
* ``range``: UCB1 on rewards mapped to [0, 1] by bounds known before the run (best clean accuracy
  at the fastest possible transfer, worst accuracy at the slowest: every attempt failing);
* ``std``: the bonus scaled by the pooled empirical reward std (σ-sub-Gaussian UCB, σ estimated
  in the run); the shipped default. No constant is tuned per seed; c = 1 everywhere.

    python benchmarks/bench_mwjc.py [--seeds 0 1 2] [--scales none range std] [--lam 50]

Measured (2-core box, ~2 s per run incl. the 128 × 20,000-transfer ground truth; total ~19 s):
best arm 36M/r0/comtune_p0.7 on every seed (E[reward] 0.741, accuracy 0.962 at ~45 % frame loss,
4.43 ms), runner-up 36M/r0/comtune_p0.5 0.0049–0.0051 behind (MC stderr 0.00025), next
24M/r1/plain (clean link, plain model) ~0.047 behind.

    python benchmarks/bench_mwjc.py                     (λ = 50 /s, 128 arms, seeds 0 1 2)
    scale   best-arm pick rate, last 1,000 of 2,000 rounds   pseudo-regret   final B
    none    0.020 / 0.020 / 0.020   bar missed               594 / 596 / 598   1
    range   0.009 / 0.009 / 0.009   bar missed               1447 (each)       1 (on [0, 1])
    std     1.000 / 0.853 / 0.836   bar met                  171 / 169 / 174   0.034 / 0.030 / 0.048

Plain UCB1 misses: the gaps between near-best arms (~0.005) are tiny next to the [0, 1] range its
bonus assumes, so for 2,000 rounds it keeps cycling through all 128 arms. Mapping rewards to
[0, 1] by a-priori bounds makes it worse: the bounds span ~20 reward units (at 6 Mbit/s, 7 failed
retries after the longest backoffs take ~0.4 s), so the scaled gaps shrink by another factor of 20. Scaling the bonus by the estimated
reward noise (σ̂ ≈ 0.03–0.05) meets the bar on all three seeds, with seeds 1 and 2 only just
clearing it. Sensitivity: λ = 50 was fixed after also trying λ = 25
(`--scales std --lam 25`). There the best arm is the same, but several clean-link arms
(24M/r1,r3,r7/plain) sit within ~0.01 of it, and the pick rate is only 0.573 / 0.606 / 0.569
(bar missed). The accuracy curves are PLACEHOLDERS, so these figures show the controller works;
they say nothing about COMtune itself.

With MEASURED curves (``--curves PATH``, the seed-mean curves written by
``python benchmarks/bench_comtune.py --curves-out comtune_curves.json``: digits CNN, pool3 cut,
plain and COMtune p = 0.3/0.5/0.7; no placeholder curve left):

    python benchmarks/bench_mwjc.py --scales std --curves comtune_curves.json     (~7 s)
    best arm 36M/r0/comtune_p0.7 on every seed (E[reward] 0.753), runner-up 36M/r0/comtune_p0.5
    only 0.00012 / 0.00021 / 0.00025 behind, i.e. within one MC stderr (0.00025)
    std     best-arm pick rate 0.422 / 0.575 / 0.572   bar missed    pseudo-regret 166 / 166 / 163
            36M/r0 with any COMtune variant: 0.959 / 0.982 / 0.997 of the last 1,000 rounds

The measured p = 0.5 and p = 0.7 models have nearly equal curves up to ~60 % loss (where the
36M/r0 link mostly operates), so "the best arm" is a statistical tie that no bandit can resolve in 2,000
rounds: the controller does settle on the right link setting and on a COMtune model, and the 80 %
bar is missed only because it splits its picks between the tied variants.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from meshlearn.split.mwjc import MwjcSettings, simulate_mwjc


def load_curves(path: str | None) -> dict[str, list[tuple[float, float]]]:
    """Measured curves from JSON: ``{"curves": {name: [[loss, acc], ...]}}`` or the bare mapping."""
    if not path:
        return {}
    data = json.loads(Path(path).read_text())
    curves = data.get("curves", data)
    return {name: [(float(x), float(y)) for x, y in pts] for name, pts in curves.items()}


def run(scale: str, seed: int, lam: float, curves: dict | None = None) -> dict:
    settings = MwjcSettings(reward_scale=scale, lam_per_s=lam, curves=curves or {})
    started = time.perf_counter()
    out = simulate_mwjc(settings, seed=seed)
    keep = ("arms", "placeholder_curves", "best_arm", "best_expected_reward", "runner_up", "best_margin",
            "eval_stderr", "best_pick_rate_last_half", "regret", "mean_accuracy", "mean_latency_ms", "bonus_scale")
    row = {"scale": scale, "seed": seed, "lam_per_s": lam, **{k: out[k] for k in keep}}
    row["top_last_half"] = dict(list(out["histogram_last_half"].items())[:3])
    row["wall_s"] = round(time.perf_counter() - started, 2)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--scales", nargs="+", default=["none", "range", "std"], choices=["none", "range", "std"])
    parser.add_argument("--lam", type=float, default=50.0, help="latency weight λ (1/s)")
    parser.add_argument("--curves", metavar="PATH", help="measured accuracy curves JSON (bench_comtune.py "
                        "--curves-out) replacing the placeholders of the same name")
    args = parser.parse_args()
    curves = load_curves(args.curves)
    rows = [run(scale, seed, args.lam, curves) for scale in args.scales for seed in args.seeds]
    for row in rows:
        print(json.dumps(row))
    summary = {}
    for scale in args.scales:
        rates = [r["best_pick_rate_last_half"] for r in rows if r["scale"] == scale]
        summary[scale] = {"pick_rates": rates, "min": min(rates), "bar_met": min(rates) >= 0.8}
    print(json.dumps({"summary": summary, "bar": "best-arm pick rate >= 0.8 over the last half, every seed"}))


if __name__ == "__main__":
    main()
