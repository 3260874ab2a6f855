"""Client selection under fluctuating resources: time-to-accuracy of random, FedCS, MAB and Oort.

The setup is the CPU reproduction in research/techniques-nishio.md §4. There are 200 clients on
digits, split by Dirichlet(α = 0.3). Device compute and bandwidth are heterogeneous and lognormal.
Resources fluctuate: a Markov chain over bandwidth classes and lognormal compute jitter, both redrawn
every period. Every round selects a fixed k clients, and the server waits at most the deadline.
Clients report their nominal resources at join time. FedCS plans on those reports, which go stale
as resources change. MAB learns observed round times and ranks clients by optimistic
samples per second. Oort learns loss-based utility and speed.

Each run stops at the end of the first round whose accuracy reaches the target, or after
``--max-rounds`` rounds. Ratios compare each selector with random selection on the same seed.
The simulation is built by hand, following ``meshlearn.experiment.build``.

    python benchmarks/bench_selection.py [--seeds 0 1 2] [--selectors random fedcs mab oort]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from meshlearn.data import load_dataset, partition
from meshlearn.executors import InlineExecutor
from meshlearn.experiment.fl.build import SIM_SECRET, client_ids
from meshlearn.fl.client import FLClient
from meshlearn.fl.metrics import round_rows, time_to_accuracy
from meshlearn.fl.selection import SelectionSettings, cost_model
from meshlearn.fl.server import FLServer, RoundSettings
from meshlearn.fl.spec import SERVER
from meshlearn.learn import Workspace, initial_params
from meshlearn.net import LinkSpec, Network, lognormal_profiles, make_topology, server_profile
from meshlearn.sim.runtime import MemorySink, Simulator
from meshlearn.wire import FrameCodec, TensorCodec

KBIT = 1e3


class StopAtTarget(MemorySink):
    """Keeps rows and ends the run once a round's accuracy reaches the target."""

    def __init__(self, target: float):
        super().__init__()
        self.target, self.stop = target, lambda: None

    def log(self, key, value, **kw) -> None:
        super().log(key, value, **kw)
        if key == "virtual_time" and self.series("accuracy")[-1] >= self.target:
            self.stop()  # virtual_time is the last key recorded for a round


def workspace(args, seed: int) -> Workspace:
    train, test = load_dataset("digits", test_fraction=0.2, seed=seed)
    parts = partition("dirichlet", train.y, args.clients, np.random.default_rng([seed, 1]), alpha=args.alpha)
    return Workspace(train, test, dict(zip(client_ids(args.clients), parts)), "mlp", {"hidden": (64,)}, seed)


def network(args, seed: int, ids: list[str], settings: SelectionSettings) -> Network:
    rng = np.random.default_rng([seed, 2])
    profiles = lognormal_profiles(len(ids), rng, args.flops, args.up_kbps * KBIT, args.down_kbps * KBIT, args.sigma)
    devices = dict(zip(ids, profiles))
    dynamics = settings.dynamics.make_process(devices, np.random.SeedSequence([seed, 3]))
    devices[SERVER] = server_profile()
    topo = make_topology("star", [SERVER, *ids], np.random.default_rng([seed, 4]))
    link = LinkSpec(latency_s=0.02, jitter_s=0.005, bandwidth_bps=1e8)
    return Network(topo, link, devices, np.random.SeedSequence([seed, 5]), dynamics=dynamics)


def selection_settings(args, name: str) -> SelectionSettings:
    own = {"fedcs": {"request_fraction": args.request_fraction},
           "mab": {"exploration": args.ucb, "discount": args.discount, "objective": args.mab_objective},
           "oort": {"percentile": args.oort_percentile}}
    return SelectionSettings(
        selector=name, **({name: own[name]} if name in own else {}),
        dynamics={"enabled": True, "period_s": args.period, "classes": args.classes, "stay": args.stay,
                  "jitter": args.jitter})


def one(args, seed: int, name: str) -> dict:
    ws, ids = workspace(args, seed), client_ids(args.clients)
    settings = selection_settings(args, name)
    net = network(args, seed, ids, settings)
    params = initial_params(ws)
    cost = cost_model(params, ws.flops_per_sample, args.epochs)
    selector = settings.make_selector(deadline_s=args.deadline, cost=cost)
    server_settings = RoundSettings(
        rounds=args.max_rounds, clients_per_round=args.k, round_deadline_s=args.deadline,
        min_completion=0.1, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, momentum=0.9)
    sink = StopAtTarget(args.target)
    sim = Simulator(net, seed=seed, executor=InlineExecutor(ws), devices=net.devices, codec=TensorCodec(),
                    frames=FrameCodec(SIM_SECRET), sink=sink, stop_on=[SERVER])
    sink.stop = sim.loop.stop
    server = FLServer(SERVER, params, server_settings, min_clients=len(ids), selector=selector)
    clients = [FLClient(c, SERVER, telemetry=telemetry(net, ws, c)) for c in ids]
    sim.add_nodes([server, *clients])
    t0 = time.perf_counter()
    sim.run()
    return summary(seed, name, round_rows(sink.rows), args.target, time.perf_counter() - t0)


def telemetry(net: Network, ws: Workspace, client: str) -> dict:
    """What the client reports at join: its nominal (period-free, soon stale) resources."""
    p = net.devices[client]
    return {"flops": p.flops, "up_bps": p.up_bps, "down_bps": p.down_bps, "num_samples": ws.num_samples(client)}


def summary(seed: int, name: str, rows: list[dict], target: float, wall: float) -> dict:
    tta = time_to_accuracy(rows, target)
    reached = next((r["round"] for r in rows if r["accuracy"] >= target), None)
    return {"seed": seed, "selector": name, "time_to_accuracy_s": None if tta is None else round(tta, 1),
            "rounds_to_target": reached, "rounds_run": len(rows), "final_accuracy": round(rows[-1]["accuracy"], 4),
            "mean_round_s": round(float(np.mean([r["round_time"] for r in rows])), 2),
            "mean_completed": round(float(np.mean([r["clients_completed"] for r in rows])), 2),
            "wall_s": round(wall, 1)}


def ratios(runs: list[dict], names: list[str]) -> dict:
    """Per selector: time-to-accuracy / random's on the same seed, per seed and the mean."""
    by = {(r["selector"], r["seed"]): r["time_to_accuracy_s"] for r in runs}
    out = {}
    for name in names:
        per_seed = []
        for seed in sorted({r["seed"] for r in runs}):
            mine, base = by.get((name, seed)), by.get(("random", seed))
            per_seed.append(None if mine is None or not base else round(mine / base, 3))
        ok = [x for x in per_seed if x is not None]
        out[name] = {"per_seed": per_seed, "mean": round(statistics.mean(ok), 3) if len(ok) == len(per_seed) else None}
    return out


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = ap.add_argument
    add("--seeds", type=int, nargs="+", default=[0, 1, 2])
    add("--selectors", nargs="+", default=["random", "fedcs", "mab", "oort"])
    add("--target", type=float, default=0.85, help="accuracy for time-to-accuracy")
    add("--clients", type=int, default=200)
    add("--alpha", type=float, default=0.3, help="Dirichlet concentration of the label split")
    add("--k", type=int, default=20, help="clients per round")
    add("--deadline", type=float, default=20.0, help="round deadline, virtual seconds")
    add("--max-rounds", type=int, default=400)
    add("--epochs", type=int, default=1)
    add("--batch-size", type=int, default=8)
    add("--lr", type=float, default=0.01, help="client SGD lr (momentum 0.9); small enough that random "
                                                      "needs ~100 rounds, so selectors can amortise learning")
    add("--flops", type=float, default=2e6, help="median client FLOP/s (microcontroller class)")
    add("--up-kbps", type=float, default=100.0, help="median uplink, kbit/s")
    add("--down-kbps", type=float, default=250.0, help="median downlink, kbit/s")
    add("--sigma", type=float, default=0.8, help="lognormal spread of the nominal device profiles")
    add("--period", type=float, default=60.0, help="seconds between resource redraws")
    add("--classes", type=float, nargs="+", default=[0.2, 0.5, 1.0], help="bandwidth class multipliers")
    add("--stay", type=float, default=0.8, help="probability of keeping the class for another period")
    add("--jitter", type=float, default=0.3, help="lognormal sigma of the compute multiplier per period")
    add("--request-fraction", type=float, default=0.3, help="FedCS: share of clients asked for resources")
    add("--ucb", type=float, default=0.05, help="MAB: UCB width")
    add("--discount", type=float, default=0.99, help="MAB: per-round decay of the time statistics")
    add("--mab-objective", choices=["throughput", "time"], default="throughput",
        help="MAB: rank by optimistic samples per second (default) or by optimistic time (the k fastest)")
    add("--oort-percentile", type=float, default=30.0, help="Oort: initial preferred-duration percentile")
    return ap.parse_args()


def main() -> None:
    import torch

    torch.set_num_threads(1)
    args = parse()
    runs = [one(args, seed, name) for seed in args.seeds for name in args.selectors]
    print(json.dumps({"benchmark": "selection", "target_accuracy": args.target,
                      "setup": {k: v for k, v in vars(args).items() if k not in ("seeds", "selectors")},
                      "ratio_to_random": ratios(runs, args.selectors), "runs": runs}))


if __name__ == "__main__":
    main()
