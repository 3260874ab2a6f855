"""DS-FL against FedAvg (and FD) on pathological non-IID digits: accuracy and bytes on the wire, same run.

Setup (the issue's acceptance, spec research/techniques-nishio.md §1): sklearn digits, 500 training
images held out as the unlabelled open set, the rest split over 20 clients with 2 classes each
(shards); reference MLP (1024, 512) = 596,490 parameters; every method gets the same 30 rounds, the
same private training (5 epochs, batch 16, SGD lr 0.05, momentum 0.9) and the same simulated star
network. Bytes are the exact frames the simulator put on the wire (up + down, all rounds). Prints one
JSON object: per method and seed the final and best accuracy, total bytes, virtual time; a summary
with mean final accuracy per method, bytes / FedAvg bytes, ERA − FedAvg and ERA − SA (points), and
whether the bars hold (ERA ≥ FedAvg − 3 points with ≤ 2 % of its bytes; ERA > SA).

    python benchmarks/bench_dsfl.py [--seeds 0 1 2] [--rounds 30] [--methods fedavg dsfl-era dsfl-sa fd]
                                    [--set temperature=0.05 ...] [--common epochs=2 ...] [--jobs 2]

How the DS-FL settings were chosen (seed 0 only, 30 rounds, final server accuracy; FedAvg 0.955):

    subset  client distil   server distil   T      ERA     SA      note
    200     2 ep, lr .01    5 ep, lr .01    0.1    0.816   0.914   ERA peaks 0.92 at round 24, then falls
    200     2 ep, lr .01    5 ep, lr .01    0.05   0.877           0.03: 0.886; 1 client epoch: collapse to 0.10
    200     5 ep, lr .01    10 ep, lr .01   0.1    0.886   0.889   0.05: 0.774
    200     2 ep, lr .02    10 ep, lr .02   0.1    0.786           peaks 0.93, then falls
    500     2 ep, lr .01    5 ep, lr .01    0.1    0.889   0.877
    500     1 ep, lr .01    10 ep, lr .01   0.1    0.713           peaks 0.95 at round 16, then falls
    500     1 ep, lr .005   10 ep, lr .005  0.1    0.939   0.950   0.07: 0.838; 0.05: 0.872
    200     1 ep, lr .005   10 ep, lr .05   0.1    0.883           (server lr .005: 0.869; SA 0.880)
    500     1 ep, lr .005   10 ep, lr .02   0.1    0.947           chosen (DSFL below); T 0.2: 0.947, 0.5: 0.942

Private epochs 2 (all methods): FedAvg 0.939, ERA 0.841, SA 0.911; 1 epoch: ERA 0.900. What the sweep
shows: clients that distil hard on ERA labels agree more every round, the labels sharpen, and the
consensus locks in its own errors (label accuracy on the open set drifts down); a gentle client pull
and a harder-learning server avoid it. T < 0.1 sharpens sooner and collapses sooner. With T = 0.1 and
10 classes ERA is neutral near uniform (T·C = 1, see fl/softlabels.py), so it cannot beat SA by much.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch

from meshlearn.data import load_dataset, partition
from meshlearn.executors import InlineExecutor
from meshlearn.experiment.fl.build import client_ids
from meshlearn.fl.client import FLClient
from meshlearn.fl.dsfl import DSFLSettings, build_dsfl
from meshlearn.fl.fd import FDSettings, build_fd
from meshlearn.fl.server import FLServer, RoundSettings
from meshlearn.fl.spec import SERVER
from meshlearn.learn import Workspace, initial_params
from meshlearn.testing import StubSetup
from meshlearn.models.zoo import count_params
from meshlearn.net import LinkSpec, Network, draw_profiles, make_topology, server_profile
from meshlearn.sim.runtime import Simulator
from meshlearn.wire import FrameCodec

CLIENTS, OPEN_SIZE = 20, 500
SECRET = b"bench-dsfl"  # frames carry a 32-byte HMAC as in real deployments; the key does not matter
# Private training, identical for every method (FedAvg's local step and DS-FL/FD's private step).
COMMON = dict(epochs=5, batch_size=16, lr=0.05, momentum=0.9, round_deadline_s=600.0, min_completion=0.5,
              join_timeout_s=60.0)
# DS-FL's own settings: the chosen row of the sweep in the module docstring.
DSFL = dict(temperature=0.1, subset_size=500, distill_epochs=1, distill_lr=0.005, distill_batch_size=50,
            distill_momentum=0.9, server_distill_epochs=10, server_distill_lr=0.02)


def workspace(seed: int, hidden: tuple[int, ...]) -> Workspace:
    """digits → (open set of 500, private rest split in 2-class shards over 20 clients); seeded."""
    train, test = load_dataset("digits", seed=seed)
    order = np.random.default_rng([seed, 1]).permutation(len(train))
    open_set, private = train.subset(np.sort(order[:OPEN_SIZE])), train.subset(np.sort(order[OPEN_SIZE:]))
    parts = partition("shards", private.y, CLIENTS, np.random.default_rng([seed, 2]), classes_per_client=2)
    return Workspace(private, test, dict(zip(client_ids(CLIENTS), parts)), "mlp", {"hidden": hidden}, seed,
                     open=open_set)


def star_network(seed: int) -> Network:
    """Server at the hub, 20 clients with 'uniform' device profiles, 100 Mbit/s links, 20 ms latency."""
    ids = client_ids(CLIENTS)
    devices = dict(zip(ids, draw_profiles("uniform", CLIENTS, np.random.default_rng([seed, 3]))))
    devices[SERVER] = server_profile()
    topo = make_topology("star", [SERVER, *ids], np.random.default_rng([seed, 4]))
    link = LinkSpec(latency_s=0.02, jitter_s=0.005, bandwidth_bps=1e8, mtu=1500, rto_s=0.2)
    return Network(topo, link, devices, np.random.SeedSequence([seed, 5]))


def fedavg_nodes(ws: Workspace, common: dict) -> tuple[list, list[str]]:
    server = FLServer(SERVER, initial_params(ws), RoundSettings(**common), min_clients=CLIENTS)
    clients = [FLClient(c, SERVER) for c in client_ids(CLIENTS)]
    return [server, *clients], [SERVER]


def run_method(method: str, seed: int, rounds: int, hidden: tuple[int, ...], overrides: dict,
               common_overrides: dict) -> dict:
    torch.set_num_threads(1)
    logging.disable(logging.WARNING)  # rejected/failed-round lines of the nodes; the JSON has the numbers
    ws = workspace(seed, hidden)
    common = {**COMMON, **common_overrides, "rounds": rounds}
    if method == "fedavg":
        nodes, stop = fedavg_nodes(ws, common)
    elif method == "fd":
        plan = build_fd(StubSetup(ws, client_ids(CLIENTS), FDSettings(), **common))
        nodes, stop = plan.nodes, plan.stop_on
    else:
        settings = DSFLSettings(**{**DSFL, **overrides, "aggregation": method.split("-")[1]})
        plan = build_dsfl(StubSetup(ws, client_ids(CLIENTS), settings, **common))
        nodes, stop = plan.nodes, plan.stop_on
    net = star_network(seed)
    sim = Simulator(net, seed=seed, executor=InlineExecutor(ws), devices=net.devices, frames=FrameCodec(SECRET),
                    stop_on=stop)
    sim.add_nodes(nodes)
    t0 = time.perf_counter()
    sim.run()
    acc = sim.sink.series("accuracy")
    total = sum(sim.sink.series("bytes_up")) + sum(sim.sink.series("bytes_down"))
    return {"method": method, "seed": seed, "final_accuracy": round(acc[-1], 4), "best_accuracy": round(max(acc), 4),
            "bytes": int(total), "virtual_time_s": round(sim.sink.series("virtual_time")[-1], 2),
            "wall_s": round(time.perf_counter() - t0, 1), "rounds": len(acc)}


def summarize(runs: list[dict], methods: list[str]) -> dict:
    mean = {m: float(np.mean([r["final_accuracy"] for r in runs if r["method"] == m])) for m in methods}
    nbytes = {m: float(np.mean([r["bytes"] for r in runs if r["method"] == m])) for m in methods}
    out: dict = {"mean_final_accuracy": {m: round(v, 4) for m, v in mean.items()},
                 "mean_total_bytes": {m: int(v) for m, v in nbytes.items()}}
    if "fedavg" in mean:
        out["bytes_ratio_vs_fedavg"] = {m: round(nbytes[m] / nbytes["fedavg"], 5) for m in methods if m != "fedavg"}
    if "dsfl-era" in mean and "fedavg" in mean:
        out["era_minus_fedavg_points"] = round(100 * (mean["dsfl-era"] - mean["fedavg"]), 2)
        out["bar_era_within_3_points_at_2pct_bytes"] = bool(
            mean["dsfl-era"] >= mean["fedavg"] - 0.03 and nbytes["dsfl-era"] <= 0.02 * nbytes["fedavg"])
    if "dsfl-era" in mean and "dsfl-sa" in mean:
        out["era_minus_sa_points"] = round(100 * (mean["dsfl-era"] - mean["dsfl-sa"]), 2)
        out["bar_era_beats_sa"] = bool(mean["dsfl-era"] > mean["dsfl-sa"])
    return out


def parse_set(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        out[key] = json.loads(value) if value not in ("true", "false") else value == "true"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--methods", nargs="+", default=["fedavg", "dsfl-era", "dsfl-sa", "fd"])
    ap.add_argument("--hidden", type=int, nargs="+", default=[1024, 512])
    ap.add_argument("--set", nargs="*", default=[], help="DS-FL setting overrides, e.g. temperature=0.05")
    ap.add_argument("--common", nargs="*", default=[], help="private-training overrides (all methods), e.g. epochs=2")
    ap.add_argument("--jobs", type=int, default=2, help="runs in parallel (processes, one torch thread each)")
    args = ap.parse_args()
    hidden, overrides, common = tuple(args.hidden), parse_set(args.set), parse_set(args.common)
    n_params = count_params(workspace(0, hidden).build())
    t0 = time.perf_counter()
    jobs = [(m, s, args.rounds, hidden, overrides, common) for s in args.seeds for m in args.methods]
    with ProcessPoolExecutor(max(1, args.jobs), mp_context=multiprocessing.get_context("spawn")) as pool:
        runs = list(pool.map(run_method, *zip(*jobs)))
    print(json.dumps({"benchmark": "dsfl", "dataset": "digits", "clients": CLIENTS, "partition": "shards(2)",
                      "open_size": OPEN_SIZE, "model": f"mlp{list(hidden)}", "model_params": n_params,
                      "rounds": args.rounds, "seeds": args.seeds, "common": {**COMMON, **common},
                      "dsfl": {**DSFL, **overrides}, "runs": runs, "summary": summarize(runs, args.methods),
                      "wall_s": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
