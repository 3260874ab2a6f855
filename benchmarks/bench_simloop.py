"""Simulator throughput: meshlearn's EventLoop against a bare heapq loop, same workload, same process.

Workload: `nodes` self-rescheduling processes with exponential delays (pre-drawn, so both loops do
identical work), `events` events in total. Prints JSON; the issue's bar is ratio ≥ 0.5.

    python benchmarks/bench_simloop.py [--events 1000000] [--nodes 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import heapq
import json
import time

import numpy as np

from meshlearn.sim.loop import EventLoop


def bare_loop(delays: np.ndarray, nodes: int) -> int:
    heap: list[tuple] = []
    seq = 0
    delays_l = delays.tolist()
    state = {"i": 0, "now": 0.0}

    def step(node: int) -> None:
        i = state["i"]
        state["i"] = i + 1
        if i < len(delays_l):
            nonlocal seq
            seq += 1
            heapq.heappush(heap, (state["now"] + delays_l[i], seq, step, node))

    for n in range(nodes):
        seq += 1
        heapq.heappush(heap, (0.0, seq, step, n))
    count = 0
    while heap:
        t, _, fn, arg = heapq.heappop(heap)
        state["now"] = t
        fn(arg)
        count += 1
    return count


def meshlearn_loop(delays: np.ndarray, nodes: int) -> int:
    loop = EventLoop()
    delays_l = delays.tolist()
    state = {"i": 0}

    def step(node: int) -> None:
        i = state["i"]
        state["i"] = i + 1
        if i < len(delays_l):
            loop.call_later(delays_l[i], step, node)

    for n in range(nodes):
        loop.call_at(0.0, step, n)
    loop.run()
    return loop.events_run


def best_rate(fn, delays, nodes, repeat) -> float:
    best = 0.0
    for _ in range(repeat):
        t0 = time.perf_counter()
        count = fn(delays, nodes)
        best = max(best, count / (time.perf_counter() - t0))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--nodes", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    delays = np.random.default_rng(0).exponential(1.0, size=args.events - args.nodes)
    bare = best_rate(bare_loop, delays, args.nodes, args.repeat)
    ours = best_rate(meshlearn_loop, delays, args.nodes, args.repeat)
    print(json.dumps({"benchmark": "simloop", "events": args.events, "nodes": args.nodes,
                      "bare_heapq_events_per_s": round(bare), "meshlearn_events_per_s": round(ours),
                      "ratio": round(ours / bare, 3)}))


if __name__ == "__main__":
    main()
