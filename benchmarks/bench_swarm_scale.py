"""The swarm at scale (issue 13): 10,000 servers in 3 sites, 1 % crashing per minute, real requests.

Two parts, in one process:

* ``scale``: ``meshlearn.swarm.scale_sim`` with a tiny GPT (``--blocks`` transformer blocks) cut into
  blocks; clients in every site send requests for ``--duration`` s of virtual time while servers crash
  (Poisson, ``--crash-per-min``), the membership view learns each crash ``--detect`` s later and every
  server re-plans with the bounded ``repair``. Bar: 100 % of requests complete, every answer bitwise
  equal to the unsplit model's; the wall time is reported.
* ``replan``: the cost of one re-plan after a crash at ``--replan-servers`` servers, same views: the
  bounded mover search (``movers=64``, what the scale run uses), the exhaustive one (``movers=None``, what
  the 64-server arms use) and the original O(n²) ``repair`` (kept below as the baseline): time ratios,
  bottleneck ratio, and how many plans the exhaustive search and the original agree on.

    python benchmarks/bench_swarm_scale.py                       # the bar: 10,000 servers, 300 s
    python benchmarks/bench_swarm_scale.py --servers 500 --duration 60 --replan-servers 300   # a quick look
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

from meshlearn.models.gpt import GPTConfig, build_gpt
from meshlearn.split.modelfile import one_thread
from meshlearn.swarm.blocks import BlockStack, SpanWorkspace
from meshlearn.swarm.placement import _order, block_throughput, bottleneck, repair, replicas, weakest_start
from meshlearn.swarm.scale_sim import ScaleSettings, make_scale_servers, simulate_scale


def gpt_model(blocks: int, seed: int = 0):
    """A tiny GPT, its block stack, and the unsplit model as a numpy function."""
    net = build_gpt(GPTConfig(vocab_size=47, n_blocks=blocks, d_model=32, n_heads=2, context=16), seed).eval()

    def reference(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.as_tensor(x)).numpy()

    return net, BlockStack.from_gpt(net), reference


def gpt_inputs(n: int, seed: int = 0, length: int = 16) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 47, size=(1, length), dtype=np.int64) for _ in range(n)]


def scale(args) -> dict:
    cfg = ScaleSettings(servers=args.servers, duration_s=args.duration, crash_per_min=args.crash_per_min,
                        detect_s=args.detect)
    _, stack, reference = gpt_model(args.blocks, args.seed)
    with torch.no_grad():
        return simulate_scale(cfg, SpanWorkspace(stack, 1.0), args.blocks, gpt_inputs(args.inputs, args.seed),
                              reference, seed=args.seed)


def replan(args) -> dict:
    """One crash at a time on the same plan: the bounded mover search (``movers=64``), the exhaustive one
    (every server, incremental tallies) and the original O(n²) ``repair`` (below, as it was), same views."""
    cfg = ScaleSettings(servers=args.replan_servers)
    servers = {s.id: s for s in make_scale_servers(cfg, np.random.default_rng(args.seed))}
    plan = repair({}, servers, args.blocks, target=3, max_moves=0)
    victims = sorted(servers)[:: max(1, len(servers) // args.replan_crashes)][:args.replan_crashes]
    arms = {"bounded": lambda cur, live: repair(cur, live, args.blocks, target=3, max_moves=2, gain=1.02, movers=64),
            "exhaustive": lambda cur, live: repair(cur, live, args.blocks, target=3, max_moves=2, gain=1.02),
            "original": lambda cur, live: original_repair(cur, live, args.blocks, target=3, max_moves=2, gain=1.02)}
    rows: dict[str, list] = {arm: [] for arm in arms}
    for victim in victims:
        live = {s: v for s, v in servers.items() if s != victim}
        current = {s: v for s, v in plan.items() if s in live}
        for arm, rule in arms.items():
            t0 = time.perf_counter()
            new = rule(current, live)
            rows[arm].append((time.perf_counter() - t0, bottleneck(new, live, args.blocks), new))
    t = {arm: float(np.mean([r[0] for r in rs])) for arm, rs in rows.items()}
    b = {arm: float(np.mean([r[1] for r in rs])) for arm, rs in rows.items()}
    return {"servers": args.replan_servers, "blocks": args.blocks, "crashes": len(victims),
            "ms_per_replan": {arm: round(1e3 * v, 2) for arm, v in t.items()},
            "speedup_bounded_vs_original": round(t["original"] / t["bounded"], 1),
            "speedup_exhaustive_vs_original": round(t["original"] / t["exhaustive"], 1),
            "bottleneck_bounded_vs_original": round(b["bounded"] / b["original"], 4),
            "same_plans_exhaustive_vs_original": sum(x[2] == y[2]
                                                     for x, y in zip(rows["exhaustive"], rows["original"]))}


# ----- the baseline: repair as it was before the fast path (O(n) per candidate, O(n²) per move) -----

def _best_for(sid, plan, servers, blocks, target):
    others = {s: v for s, v in plan.items() if s != sid}
    return weakest_start(servers[sid], block_throughput(others, servers, blocks), replicas(others, servers, blocks),
                         target)


def original_repair(current, servers, blocks, *, target=2, max_moves=1, gain=1.1):
    plan = {s: start for s, start in current.items() if s in servers}
    for sid in sorted((s for s in servers if s not in plan), key=_order):
        plan[sid] = _best_for(sid, plan, servers, blocks, target)
    for _ in range(len(plan)):  # deficits
        reps = replicas(plan, servers, blocks)
        spare = [(int(reps[v:v + servers[s].span_len(blocks)].min()), _order(s), s) for s, v in plan.items()]
        spare = [x for x in spare if x[0] > target]
        if reps.min() >= target or not spare:
            break
        mover = max(spare)[2]
        plan[mover] = _best_for(mover, plan, servers, blocks, target)
    for _ in range(max_moves):
        if not _original_improve(plan, servers, blocks, target, gain):
            break
    return plan


def _original_improve(plan, servers, blocks, target, gain) -> bool:
    best, best_value = None, bottleneck(plan, servers, blocks) * gain
    for sid in sorted(plan, key=_order):
        start = _best_for(sid, plan, servers, blocks, target)
        if start == plan[sid]:
            continue
        trial = {**plan, sid: start}
        if replicas(trial, servers, blocks).min() < min(target, replicas(plan, servers, blocks).min()):
            continue
        value = bottleneck(trial, servers, blocks)
        if value > best_value:
            best, best_value = (sid, start), value
    if best is None:
        return False
    plan[best[0]] = best[1]
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--servers", type=int, default=10_000)
    ap.add_argument("--duration", type=float, default=300.0, help="virtual seconds of requests and crashes")
    ap.add_argument("--crash-per-min", type=float, default=0.01)
    ap.add_argument("--detect", type=float, default=14.4, help="crash -> known to the membership view, s")
    ap.add_argument("--blocks", type=int, default=8)
    ap.add_argument("--inputs", type=int, default=32, help="distinct inputs the clients draw from")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--replan-servers", type=int, default=1000, help="servers of the re-plan comparison "
                    "(the original rule is O(n^2) per move)")
    ap.add_argument("--replan-crashes", type=int, default=5)
    ap.add_argument("--skip-replan", action="store_true")
    args = ap.parse_args()
    one_thread()
    t0 = time.perf_counter()
    result = {"command": " ".join(["python", *sys.argv]), "scale": scale(args)}
    if not args.skip_replan:
        result["replan"] = replan(args)
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
