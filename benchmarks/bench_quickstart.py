"""The quickstart as the README runs it: accuracy, rounds to 92%, bytes, virtual and wall time.

Also splits wall time into time spent in training/evaluation tasks (torch) and everything else
(the simulator, network model, wire codec, store), as a ratio measured in the same run.

    python benchmarks/bench_quickstart.py [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from meshlearn.experiment import load_experiment, run_experiment
from meshlearn.learn import Workspace
from meshlearn.store import RunStore


def timed_workspace_run():
    """Patch Workspace.run to accumulate the time spent inside tasks."""
    spent = {"s": 0.0}
    original = Workspace.run

    def run(self, task):
        t0 = time.perf_counter()
        try:
            return original(self, task)
        finally:
            spent["s"] += time.perf_counter() - t0

    Workspace.run = run
    return spent


def one(seed: int, spent: dict) -> dict:
    cfg = load_experiment("quickstart", [f"seed={seed}"])
    with tempfile.TemporaryDirectory() as root:
        spent["s"] = 0.0
        t0 = time.perf_counter()
        run = run_experiment(cfg, RunStore(root))
        wall = time.perf_counter() - t0
        rows = run.metrics.round_table(["accuracy", "bytes_up", "bytes_down", "virtual_time"])
    first92 = next((r["round"] for r in rows if r["accuracy"] >= 0.92), None)
    return {"seed": seed, "final_accuracy": round(rows[-1]["accuracy"], 4), "first_round_at_92pct": first92,
            "bytes_up": int(sum(r["bytes_up"] for r in rows)), "bytes_down": int(sum(r["bytes_down"] for r in rows)),
            "virtual_time_s": round(rows[-1]["virtual_time"], 1), "wall_s": round(wall, 2),
            "task_share_of_wall": round(spent["s"] / wall, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    seeds = ap.parse_args().seeds
    spent = timed_workspace_run()
    print(json.dumps({"benchmark": "quickstart", "runs": [one(s, spent) for s in seeds]}))


if __name__ == "__main__":
    main()
