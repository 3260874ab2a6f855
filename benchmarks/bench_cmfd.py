"""CMFD against parameter-averaging gossip on one-, two- and three-hop rings (spec §2, CPU reproduction).

10 peers on the embedded digits, 2 classes each (shards), 300 training images held out as the
shared unlabelled set, MLP 64-10, 200 epochs, identical initialisation. Reports the final mean
(and worst) node accuracy per topology and seed, the 3-seed means and the gap CMFD − averaging.
Both algorithms share the data, model and local batch size; each keeps its own tuned knobs
(see TUNED below and the sweep notes in the report). Runs spread over `--workers` processes.

    python benchmarks/bench_cmfd.py [--seeds 0 1 2] [--epochs 200] [--hops 1 2 3] [--batch-size 32] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

TUNED = {
    "cmfd": {"lr": 0.02, "cmfd_lr": 1.0, "distill_batch_size": 20, "loss": "mse"},
    "gossip": {"lr": 0.1, "self_weight": 0.1},
}


def digits_workspace(n: int, classes_per_peer: int, open_size: int, seed: int):
    """Digits split: `open_size` training images become the unlabelled set, the rest shards over n peers."""
    from meshlearn.data import load_dataset, partition
    from meshlearn.learn import Workspace

    train, test = load_dataset("digits", test_fraction=0.2, seed=seed)
    order = np.random.default_rng(seed).permutation(len(train))
    open_set = train.subset(np.sort(order[:open_size])) if open_size else None
    train = train.subset(np.sort(order[open_size:]))
    parts = partition("shards", train.y, n, np.random.default_rng(seed + 1), classes_per_client=classes_per_peer)
    ids = [f"peer-{i}" for i in range(n)]
    return Workspace(train, test, dict(zip(ids, parts)), "mlp", {"hidden": (64,)}, seed, open=open_set), ids


def one(algo: str, k: int, seed: int, epochs: int, batch_size: int) -> dict:
    import torch

    from meshlearn.fl.decentral import DecentralSettings, build_cmfd, build_gossip
    from meshlearn.testing import StubSetup
    from meshlearn.net import LinkSpec, Network, draw_profiles, make_topology
    from meshlearn.executors import InlineExecutor
    from meshlearn.sim.runtime import Simulator

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    ws, ids = digits_workspace(10, 2, 300, seed)
    topology = make_topology("k_hop_ring", ids, np.random.default_rng(seed), k=k)
    settings = DecentralSettings(epochs=epochs, eval_every=max(1, epochs // 4), batch_size=batch_size, **TUNED[algo])
    build = {"cmfd": build_cmfd, "gossip": build_gossip}[algo]
    plan = build(StubSetup(ws, ids, settings, seed=seed, topology=topology))
    nodes, stop_on = plan.nodes, plan.stop_on
    devices = dict(zip(ids, draw_profiles("uniform", len(ids), np.random.default_rng(seed))))
    sim = Simulator(Network(topology, LinkSpec(latency_s=0.01), devices, np.random.SeedSequence(seed)),
                    seed=seed, executor=InlineExecutor(ws), devices=devices, stop_on=stop_on)
    sim.add_nodes(nodes)
    nodes[0].ledger.watch(sim.is_alive)
    sim.run()
    nodes[0].ledger.close()
    series = sim.sink.series
    return {"algo": algo, "k": k, "seed": seed, "accuracy": round(series("accuracy")[-1], 4),
            "accuracy_min": round(series("accuracy_min")[-1], 4),
            "curve": [round(a, 4) for a in series("accuracy")], "bytes_total": int(sum(series("bytes_total"))),
            "virtual_time_s": round(series("virtual_time")[-1], 2), "wall_s": round(time.perf_counter() - t0, 1)}


def summarize(runs: list[dict]) -> dict:
    out = {}
    for k in sorted({r["k"] for r in runs}):
        mean = {a: float(np.mean([r["accuracy"] for r in runs if r["k"] == k and r["algo"] == a]))
                for a in ("cmfd", "gossip")}
        out[f"{k}_hop"] = {"cmfd": round(mean["cmfd"], 4), "averaging": round(mean["gossip"], 4),
                           "gap_points": round(100 * (mean["cmfd"] - mean["gossip"]), 2)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--hops", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--batch-size", type=int, default=32, help="local minibatch size of both algorithms")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    jobs = [(algo, k, s, a.epochs, a.batch_size) for algo in ("cmfd", "gossip") for k in a.hops for s in a.seeds]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(a.workers) as pool:
        runs = list(pool.map(one, *zip(*jobs)))
    print(json.dumps({"benchmark": "cmfd_vs_averaging", "settings": TUNED, "epochs": a.epochs,
                      "batch_size": a.batch_size,
                      "summary": summarize(runs), "runs": runs, "wall_s": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
