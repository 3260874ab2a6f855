"""Client updates per second: inline vs vectorized (vs process pool, vs Ray) on 1,000 digits clients.

One FedAvg round's local training: every client trains the same global digits MLP (64-64-10,
the default model) for one local epoch (batch 16, lr 0.05, momentum 0.9). Each executor trains the
same 1,000 tasks in the same process run; we report client updates per second (best of
``--repeat``), the speed-up over inline, and the largest absolute parameter difference from the
inline results (vectorized: float-order noise; process pool / Ray: 0).

Two data layouts, both measured unless ``--layouts`` says otherwise:

* ``partition``: digits' 1,437 training images split over 1,000 clients (``--partition`` iid or
  dirichlet, min 1 sample). That is the honest split but a degenerate one: 1–2 samples, so one SGD
  step, per client.
* ``resampled``: each client draws ``--min-samples``..``--max-samples`` images (uniform) *with
  replacement*, with label proportions ~ Dirichlet(``--alpha``) over the 10 classes; clients
  overlap, as if 1,000 devices saw similar digits. 1 epoch = 2–4 steps per client.

The bar for the vectorized executor is >= 10x inline updates/s. torch runs with ``--threads`` (1,
what experiments use by default) intra-op threads in every executor. The process pool's (and Ray's)
start-up is reported separately from its warm throughput (the second pass over the tasks).

    python benchmarks/bench_executors.py [--clients 1000] [--repeat 3] [--process] [--ray]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from typing import Any

import numpy as np
import torch

from meshlearn.data import load_dataset, partition
from meshlearn.executors import make_executor
from meshlearn.executors.pool import default_workers
from meshlearn.learn import TrainTask, Workspace, initial_params


def resampled_parts(labels: np.ndarray, clients: int, lo: int, hi: int, alpha: float,
                    rng: np.random.Generator) -> list[np.ndarray]:
    """Per client: n ~ U{lo..hi} indices drawn with replacement, classes ~ Dirichlet(alpha)."""
    classes = np.unique(labels)
    pools = [np.flatnonzero(labels == c) for c in classes]
    parts = []
    for _ in range(clients):
        n = int(rng.integers(lo, hi + 1))
        per_class = rng.multinomial(n, rng.dirichlet(np.full(len(classes), alpha)))
        parts.append(np.sort(np.concatenate([rng.choice(pool, k) for pool, k in zip(pools, per_class)])))
    return parts


def run_all(executor: Any, tasks: list[TrainTask]) -> tuple[list, float]:
    t0 = time.perf_counter()
    handles = [executor.submit(t) for t in tasks]
    results = [h.result() for h in handles]
    return results, time.perf_counter() - t0


def compare(ref: list, got: list) -> dict:
    return {
        "max_abs_param_diff": max(float(np.max(np.abs(a.params[k] - b.params[k]))) for a, b in zip(ref, got)
                                  for k in a.params),
        "max_abs_loss_diff": max(abs(a.loss - b.loss) for a, b in zip(ref, got)),
        "same_steps_and_samples": all((a.steps, a.num_samples) == (b.steps, b.num_samples) for a, b in zip(ref, got)),
    }


def bench_layout(ws: Workspace, args: argparse.Namespace) -> dict:
    p0 = initial_params(ws)
    tasks = [TrainTask(client=c, params=p0, epochs=args.epochs, batch_size=args.batch_size, lr=0.05,
                       momentum=0.9, seed=i) for i, c in enumerate(ws.clients)]
    sizes = np.array([ws.num_samples(c) for c in ws.clients])
    out: dict[str, Any] = {"samples_per_client": {"min": int(sizes.min()), "mean": round(float(sizes.mean()), 2),
                                                  "max": int(sizes.max())}}
    inline = make_executor("inline", ws)
    ref, best = None, float("inf")
    for _ in range(args.repeat):
        ref, dt = run_all(inline, tasks)
        best = min(best, dt)
    out["steps_total"] = int(sum(r.steps for r in ref))
    out["inline"] = {"seconds": round(best, 4), "updates_per_s": round(len(tasks) / best, 1)}

    vec = make_executor("vectorized", ws)
    got, best = None, float("inf")
    for _ in range(args.repeat):
        got, dt = run_all(vec, tasks)
        best = min(best, dt)
    out["vectorized"] = {"seconds": round(best, 4), "updates_per_s": round(len(tasks) / best, 1),
                         "speedup_vs_inline": round(out["inline"]["seconds"] / best, 2), **compare(ref, got)}

    for name, flag, options in (("process", args.process, {"workers": args.workers}),
                                ("ray", args.ray, {"actors": args.workers, "num_cpus": args.workers})):
        if not flag:
            continue
        t0 = time.perf_counter()
        ex = make_executor(name, ws, **options)
        start = time.perf_counter() - t0
        try:
            got, cold = run_all(ex, tasks)  # includes worker/actor start-up and first-task costs
            got, warm = run_all(ex, tasks)
        finally:
            ex.close()
        out[name] = {"workers": args.workers, "start_s": round(start, 3), "cold_pass_s": round(cold, 4),
                     "seconds": round(warm, 4), "updates_per_s": round(len(tasks) / warm, 1),
                     "speedup_vs_inline": round(out["inline"]["seconds"] / warm, 2), **compare(ref, got)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--layouts", default="partition,resampled")
    ap.add_argument("--partition", choices=["iid", "dirichlet"], default="dirichlet")
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--min-samples", type=int, default=20)
    ap.add_argument("--max-samples", type=int, default=60)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--process", action="store_true", help="also time the process-pool executor")
    ap.add_argument("--ray", action="store_true", help="also time the Ray executor (needs meshlearn[ray])")
    ap.add_argument("--workers", type=int, default=default_workers())
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.ray:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    torch.set_num_threads(args.threads)

    train, test = load_dataset("digits")
    rng = np.random.default_rng(args.seed)
    report: dict[str, Any] = {
        "benchmark": "executors", "clients": args.clients, "model": "mlp hidden=(64,) on digits 8x8",
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": 0.05, "momentum": 0.9,
        "torch_threads": args.threads, "repeat": args.repeat,
        "env": {"cpus": os.cpu_count(), "usable_cpus": default_workers(), "torch": torch.__version__,
                "python": platform.python_version()},
        "layouts": {},
    }
    ids = [f"client-{i:04d}" for i in range(args.clients)]
    for layout in args.layouts.split(","):
        if layout == "partition":
            kwargs = {"alpha": args.alpha} if args.partition == "dirichlet" else {}
            parts = partition(args.partition, train.y, args.clients, rng, **kwargs)
            desc = f"digits train ({len(train)}) partitioned {args.partition} over {args.clients} clients"
        elif layout == "resampled":
            parts = resampled_parts(train.y, args.clients, args.min_samples, args.max_samples, args.alpha, rng)
            desc = (f"{args.min_samples}-{args.max_samples} samples per client drawn with replacement, "
                    f"Dirichlet({args.alpha}) label mix")
        else:
            raise SystemExit(f"unknown layout {layout!r} (partition, resampled)")
        ws = Workspace(train, test, dict(zip(ids, parts)), "mlp", {"hidden": (64,)}, model_seed=args.seed)
        report["layouts"][layout] = {"data": desc, **bench_layout(ws, args)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
