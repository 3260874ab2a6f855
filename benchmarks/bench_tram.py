"""Tram-FL routing policies at equal transmissions (spec §3, CPU reproduction).

10 nodes on the embedded digits, one class each (shards), MLP 64-10, one minibatch of 100 per hop,
100 transmissions, evaluation every 20. Compares variance (greedy class balancing), cycle (fixed
ring order) and random routing per seed, with the seed means and the ordering check.

    python benchmarks/bench_tram.py [--seeds 0 1 2] [--lr 0.05] [--transmissions 100]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

POLICIES = ("variance", "cycle", "random")


def digits_workspace(n: int, seed: int):
    from meshlearn.data import load_dataset, partition
    from meshlearn.learn import Workspace

    train, test = load_dataset("digits", test_fraction=0.2, seed=seed)
    parts = partition("shards", train.y, n, np.random.default_rng(seed + 1), classes_per_client=1)
    ids = [f"node-{i}" for i in range(n)]
    return Workspace(train, test, dict(zip(ids, parts)), "mlp", {"hidden": (64,)}, seed), ids


def one(routing: str, seed: int, lr: float, transmissions: int) -> dict:
    from meshlearn.fl.tram import TramSettings, build_tram
    from meshlearn.testing import StubSetup
    from meshlearn.net import LinkSpec, Network, draw_profiles
    from meshlearn.executors import InlineExecutor
    from meshlearn.sim.runtime import Simulator

    t0 = time.perf_counter()
    ws, ids = digits_workspace(10, seed)
    settings = TramSettings(routing=routing, lr=lr, transmissions=transmissions)
    plan = build_tram(StubSetup(ws, ids, settings, seed=seed))
    nodes, stop_on = plan.nodes, plan.stop_on
    devices = dict(zip(ids, draw_profiles("uniform", len(ids), np.random.default_rng(seed))))
    sim = Simulator(Network(None, LinkSpec(latency_s=0.01), devices, np.random.SeedSequence(seed)), seed=seed,
                    executor=InlineExecutor(ws), devices=devices, stop_on=stop_on)
    sim.add_nodes(nodes)
    sim.run()
    series = sim.sink.series
    return {"routing": routing, "seed": seed, "accuracy": round(series("accuracy")[-1], 4),
            "curve": [round(a, 4) for a in series("accuracy")], "transmissions": int(series("transmissions")[-1]),
            "bytes_total": int(sum(series("bytes_total"))), "virtual_time_s": round(series("virtual_time")[-1], 2),
            "wall_s": round(time.perf_counter() - t0, 2)}


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--transmissions", type=int, default=100)
    a = ap.parse_args()
    torch.set_num_threads(1)
    runs = [one(p, s, a.lr, a.transmissions) for p in POLICIES for s in a.seeds]
    mean = {p: round(float(np.mean([r["accuracy"] for r in runs if r["routing"] == p])), 4) for p in POLICIES}
    order_ok = mean["variance"] >= mean["cycle"] >= mean["random"]
    print(json.dumps({"benchmark": "tram_routing", "lr": a.lr, "transmissions": a.transmissions,
                      "mean_accuracy": mean, "variance>=cycle>=random": order_ok, "runs": runs}))


if __name__ == "__main__":
    main()
