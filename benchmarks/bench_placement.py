"""Block placement across servers (issue 13, first part): our repair rule vs Petals' rule, a central
optimiser and a static assignment, on the same traces in the same process.

64 heterogeneous servers (1–4 requests/s through a block, memory for 1–3 blocks, 3 sites), a 32-block
model, replica target 3, 1 s membership heartbeat (a crash is known after 2), 0.1 s to load a block.

* single crash: each server in turn crashes at t = 30 s (ours: all 64; Petals and central: the servers
  hosting the weakest blocks, where a crash hurts); time until every block has its replicas back;
* churn: Poisson joins and crashes (``--events`` of them, one per 20 s on average) on ``--seeds`` traces:
  time-averaged served bottleneck / the central optimiser's for the live set, block migrations per
  churn event, oscillations (a server back on a span it left < 60 s before).

    python benchmarks/bench_placement.py [--seeds 0 1 2] [--events 24] [--petals-crashes 6]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from meshlearn.swarm.placement import replicas
from meshlearn.swarm.placement_sim import ARMS, ChurnSettings, Event, Optimum, churn_trace, make_servers, simulate


def weakest_hosts(cfg: ChurnSettings, initial, arm: str, opt: Optimum) -> list:
    """Servers hosting a block with the fewest replicas in ``arm``'s initial placement."""
    from meshlearn.swarm.placement_sim import _Swarm, _World

    world = _World(arm, cfg, _Swarm(cfg, {s.id: s for s in initial}), {s.id: s for s in initial},
                   np.random.default_rng(cfg.seed))
    world.begin()
    start, servers = world.swarm.start, world.swarm.servers
    reps = replicas(start, servers, cfg.blocks)
    weak = set(np.flatnonzero(reps == reps.min()).tolist())
    return [servers[s] for s, v in sorted(start.items()) if weak & set(range(v, v + servers[s].span_len(cfg.blocks)))]


def single_crashes(cfg: ChurnSettings, initial, opt: Optimum, sample: int) -> dict:
    out = {}
    for arm in ("repair", "petals", "central", "static"):
        victims = initial if arm in ("repair", "static") else weakest_hosts(cfg, initial, arm, opt)[:sample]
        t0 = time.perf_counter()
        rec = [simulate(arm, cfg, initial, [Event(30.0, "crash", v)], 330.0, opt)["recovery_s"][0] for v in victims]
        back = [r for r in rec if r is not None]
        out[arm] = {"crashes": len(rec), "recovered": len(back), "max_s": max(back) if back else None,
                    "mean_s": round(float(np.mean(back)), 3) if back else None,
                    "not_back_after_300_s": len(rec) - len(back), "wall_s": round(time.perf_counter() - t0, 1)}
    return out


def churn(cfg: ChurnSettings, initial, seeds: list[int], events: int, opt: Optimum) -> dict:
    rows = {arm: [] for arm in ARMS}
    for seed in seeds:
        trace = churn_trace(cfg, initial, events, 1 / 20, np.random.default_rng(1000 + seed))
        until = trace[-1].t + 60
        for arm in ARMS:
            t0 = time.perf_counter()
            r = simulate(arm, cfg, initial, trace, until, opt)
            rows[arm].append({"seed": seed, **{k: v for k, v in r.items() if k != "recovery_s"},
                              "worst_recovery_s": _worst(r["recovery_s"]), "wall_s": round(time.perf_counter() - t0, 1)})
    return {arm: {"per_seed": rs, "bottleneck_vs_central": round(float(np.mean([r["bottleneck_vs_central"] for r in rs])), 4),
                  "migrations_per_event": round(float(np.mean([r["migrations_per_event"] for r in rs])), 3),
                  "oscillations": sum(r["oscillations"] for r in rs)} for arm, rs in rows.items()}


def _worst(rec: list) -> float | str:
    return "not back" if any(r is None for r in rec) else max(rec, default=0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--events", type=int, default=24)
    ap.add_argument("--petals-crashes", type=int, default=6)
    args = ap.parse_args()
    cfg = ChurnSettings()
    initial = make_servers(cfg.servers, np.random.default_rng(0), capacity=cfg.capacity, sites=cfg.sites)
    opt = Optimum(cfg)
    t0 = time.perf_counter()
    result = {"settings": cfg.__dict__, "single_crash": single_crashes(cfg, initial, opt, args.petals_crashes),
              "churn": churn(cfg, initial, args.seeds, args.events, opt)}
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
