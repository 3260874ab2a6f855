"""SWIM in simulation against its analytic yardsticks (issue 4), and the 10,000-node speed bar.

    python benchmarks/bench_swim.py detection      # N = 1,000: first detection vs e/(e-1) periods
    python benchmarks/bench_swim.py dissemination  # N = 10,000: rounds to reach 99.99% vs 13
    python benchmarks/bench_swim.py speed          # N = 10,000 for 100 periods: wall seconds vs 60
    python benchmarks/bench_swim.py all

detection: every member probes on the same period grid (phase 0, as in SWIM's analysis); a member
crashes just before a period boundary, and the time to the first SUSPECT is counted in periods.
SWIM's expectation with a uniformly random target per period is 1/(1 - e^-1) = e/(e-1) = 1.582;
``--order round_robin`` reports the shuffled round-robin order too (the default probe order).

dissemination: one member is crashed and, at t0, another declares it dead (no suspicion phase:
the pure spread). Rounds = (time the 99.99th percentile of live members learned it - t0) / gossip
interval. Serf's logistic model (techniques-mizutani.md §5) predicts 13 rounds at fanout 3.

speed: 10,000 warm-started members, LAN preset, 100 protocol periods, no failures; wall seconds
of ``sim.run`` (building the cluster is reported apart). Results go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from meshlearn.overlay.simnet import crash_at, overlay_simulator
from meshlearn.overlay.swim.config import SwimConfig
from meshlearn.overlay.swim.node import ALL, SwimNode
from meshlearn.overlay.swim.packets import DEAD
from meshlearn.overlay.swim.state import Roster


def build(n: int, config: SwimConfig, *, seed: int, phase: float | None, events: list | None = None):
    ids = [f"n{i:05d}" for i in range(n)]
    roster = Roster(ids)
    hook = None if events is None else (lambda *e: events.append(e))
    nodes = [SwimNode(i, config, members=ALL, roster=roster, phase=phase, on_event=hook) for i in ids]
    return overlay_simulator(nodes, seed=seed), nodes, ids


def detection(n: int, trials: int, order: str, seed: int) -> dict:
    """Mean periods from a crash (just before a boundary) to the first suspicion of it."""
    config = SwimConfig(probe_order=order, push_pull_interval_s=1e6, rejoin_interval_s=1e6)
    events: list = []
    sim, _, ids = build(n, config, seed=seed, phase=0.0, events=events)
    rng = np.random.default_rng(seed)
    victims = rng.choice(n, size=trials, replace=False)
    spacing, batch = 6, 5  # 5 crashes every 6 periods; one member's probes are 1 of n-1 targets
    crash_times = {ids[v]: (k // batch + 1) * spacing - 0.01 for k, v in enumerate(victims)}
    for node, t in crash_times.items():
        crash_at(sim, node, t)
    sim.run(until=(trials // batch + 2) * spacing)
    first: dict[str, float] = {}
    for t, _, event, member in events:
        if event == "suspect" and member in crash_times:
            first[member] = min(first.get(member, math.inf), t)
    periods = [(first[m] - crash_times[m]) / config.probe_interval_s for m in crash_times if m in first]
    return dict(n=n, order=order, trials=len(periods), mean_periods=float(np.mean(periods)),
                sem=float(np.std(periods) / math.sqrt(len(periods))), analytic=math.e / (math.e - 1))


def dissemination(n: int, seed: int) -> dict:
    """Gossip rounds until 99.99% of live members know of a death."""
    config = SwimConfig(push_pull_interval_s=1e6, rejoin_interval_s=1e6)
    events: list = []
    sim, nodes, ids = build(n, config, seed=seed, phase=None, events=events)
    victim, origin, t0 = ids[1], nodes[0], 10.0
    crash_at(sim, victim, t0 - 0.001)
    sim.loop.call_at(t0, lambda _: origin._apply(sim.context(origin.node_id), (DEAD, victim, 0, origin.node_id),
                                                 origin.node_id))
    started = time.perf_counter()
    sim.run(until=t0 + 30 * config.gossip_interval_s)
    learned = sorted(t for t, _, event, member in events if event == "dead" and member == victim)
    need = math.ceil(0.9999 * (n - 1))
    reached = learned[need - 1] if len(learned) >= need else math.inf
    return dict(n=n, fanout=config.gossip_nodes, knew=len(learned), of=n - 1,
                rounds_to_9999=(reached - t0) / config.gossip_interval_s,
                rounds_to_50=(learned[(n - 1) // 2] - t0) / config.gossip_interval_s,
                logistic_rounds=logistic_rounds(n, config.gossip_nodes), wall_s=time.perf_counter() - started)


def logistic_rounds(n: int, fanout: int, target: float = 0.9999) -> int:
    """Serf's convergence model: 1 / (1 + (N+1) e^(-contact N x)), contact = fanout / N × 0.5."""
    contact = fanout / n * 0.5
    x = 0
    while 1.0 / (1.0 + (n + 1) * math.exp(-contact * n * x)) < target:
        x += 1
    return x


def speed(n: int, periods: int, seed: int) -> dict:
    started = time.perf_counter()
    sim, _, _ = build(n, SwimConfig(), seed=seed, phase=None)
    sim.run(until=0.0)
    built = time.perf_counter() - started
    started = time.perf_counter()
    sim.run(until=periods * SwimConfig().probe_interval_s)
    wall = time.perf_counter() - started
    return dict(n=n, periods=periods, build_s=built, run_s=wall, events=sim.loop.events_run,
                us_per_event=wall / sim.loop.events_run * 1e6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["detection", "dissemination", "speed", "all"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trials", type=int, default=300)
    args = parser.parse_args()
    if args.what in ("detection", "all"):
        for order in ("random", "round_robin"):
            print(detection(1000, args.trials, order, args.seed))
    if args.what in ("dissemination", "all"):
        print(dissemination(10_000, args.seed))
    if args.what in ("speed", "all"):
        print(speed(10_000, 100, args.seed))


if __name__ == "__main__":
    main()
