"""Robust aggregation under malicious clients: FedAvg's mean vs median, trimmed mean and norm clipping.

20 clients on the embedded digits data (IID split), FedAvg, 30 rounds of two local epochs, every
client every round, the vectorized executor. 0, 1, 2 or 3 of the clients are malicious (``[attack]``,
``meshlearn.fl.attacks``, default strengths): they train honestly, then upload their update scaled
×1000, sign-flipped ×4, or Gaussian noise of 100× its RMS. Each cell is one config: ``fl.aggregator``
(default options: trimmed_mean trims 0.2 per side, norm_clip clips at the round's median norm) ×
attack × count.

Reported per cell: the final test accuracy, mean over the seeds. The baseline is in the same run:
``loss_vs_mean_no_attack`` is each rule's accuracy points below the mean's with no attacker (the bar:
≤ 1 point), and the table prints every cell beside it.

    python benchmarks/bench_robust.py [--seeds 0 1 2] [--rounds 30] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time

from meshlearn.experiment.fl.build import build_simulation, client_ids
from meshlearn.experiment.fl.schema import fl_config

RULES = ["mean", "median", "trimmed_mean", "norm_clip"]
ATTACKS = ["scale", "sign_flip", "random"]


def config(args, seed: int, rule: str, attack: str, count: int):
    """The experiment of one cell: the first ``count`` clients run ``attack``."""
    return fl_config({
        "name": "robust", "seed": seed,
        "data": {"clients": args.clients, "partition": args.partition},
        "fl": {"rounds": args.rounds, "epochs": args.epochs, "aggregator": rule},
        "network": {"devices": "uniform"},
        "runtime": {"executor": "vectorized", "checkpoint": False},
        "attack": {"clients": client_ids(args.clients)[:count], "kind": attack},
    })


def final_accuracy(cfg) -> float:
    s = build_simulation(cfg)
    s.sim.run()
    return s.sim.sink.series("accuracy")[-1]


def cell(args, rule: str, attack: str, count: int) -> dict:
    accs = [final_accuracy(config(args, seed, rule, attack, count)) for seed in args.seeds]
    return {"rule": rule, "attack": attack if count else "none", "malicious": count,
            "accuracy": round(statistics.mean(accs), 4), "per_seed": [round(a, 4) for a in accs]}


def grid(args) -> list[dict]:
    rows = [cell(args, rule, "scale", 0) for rule in RULES]
    for attack in ATTACKS:
        for count in args.counts:
            rows += [cell(args, rule, attack, count) for rule in RULES]
    return rows


def markdown(rows: list[dict], clients: int) -> str:
    """One line per (attack, malicious) in grid order with a column per rule, accuracies in percent."""
    by = {(r["attack"], r["malicious"], r["rule"]): r["accuracy"] for r in rows}
    keys = list(dict.fromkeys((r["attack"], r["malicious"]) for r in rows))
    lines = [f"| attack | malicious of {clients} | " + " | ".join(RULES) + " |", "|---|---|" + "---|" * len(RULES)]
    for attack, count in keys:
        cells = " | ".join(f"{100 * by[(attack, count, rule)]:.1f}" for rule in RULES)
        lines.append(f"| {attack} | {count} | {cells} |")
    return "\n".join(lines)


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--epochs", type=int, default=2, help="local epochs per round")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--counts", type=int, nargs="+", default=[1, 2, 3], help="malicious clients per attacked cell")
    ap.add_argument("--partition", default="iid", help="data.partition (iid; dirichlet is alpha 0.5)")
    ap.add_argument("--markdown", action="store_true", help="also print the table for docs/benchmarks.md")
    return ap.parse_args()


def main() -> None:
    args = parse()
    logging.getLogger("meshlearn").setLevel(logging.ERROR)  # rejected-update warnings are expected under attack
    t0 = time.perf_counter()
    rows = grid(args)
    base = {r["rule"]: r["accuracy"] for r in rows if r["malicious"] == 0}
    loss = {rule: round(100 * (base["mean"] - base[rule]), 2) for rule in RULES}
    print(json.dumps({"benchmark": "robust_aggregation", "clients": args.clients, "rounds": args.rounds,
                      "seeds": args.seeds, "partition": args.partition, "loss_vs_mean_no_attack": loss,
                      "bar_met": all(v <= 1.0 for v in loss.values()), "wall_s": round(time.perf_counter() - t0, 1),
                      "cells": rows}))
    if args.markdown:
        print(markdown(rows, args.clients))


if __name__ == "__main__":
    main()
