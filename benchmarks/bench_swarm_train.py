"""Swarm pipeline training with a server crash vs checkpoint-and-restart (issue 13, scope 4), in virtual time.

Tiny GPT (4 blocks, d_model 32), 2 spans x 2 replicas, servers of ``--gflops`` GFLOP/s on 1 Gbit/s LAN links
(simulator, virtual time: compute from the tasks' FLOPs, traffic from the real wire encoding). Arms:

* ``swarm``: no failure, the baseline step time;
* ``swarm_crash``: the primary of blocks 0-1 crashes mid-run; the client redoes the in-flight step through
  its replica (primary/backup: every holder applied every committed step, so nothing committed is lost);
* ``checkpoint_restart`` (torchrun/elastic style, from the measured step time): every ``K`` steps all
  workers save a checkpoint (``--ckpt-s`` each); the same crash makes every worker restart (``--restart-s``,
  after the same detection timeout) from the last checkpoint, losing the steps since it.

    python benchmarks/bench_swarm_train.py [--steps 200] [--micro-batches 2] [--every 10 50 100] [--restart-s 5]

The restart and checkpoint costs of the baseline are parameters (assumptions, printed with the result); the
swarm arms are measured. The swarm's lost time is its failed step's time beyond the median step (detection
plus the redo); its total can even shrink after a crash (one replica fewer to relay gradients to).
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch

from meshlearn.data.text import CharVocab, load_corpus
from meshlearn.executors import InlineExecutor
from meshlearn.models.gpt import GPTConfig, build_gpt, lm_batches
from meshlearn.net.devices import DeviceProfile
from meshlearn.net.faults import Crash
from meshlearn.overlay.simnet import overlay_simulator
from meshlearn.swarm.blocks import BlockStack
from meshlearn.swarm.train_blocks import TrainWorkspace
from meshlearn.swarm.training import TrainClient, TrainServer

SPANS = {"a": (0, 2), "b": (0, 2), "c": (2, 4), "d": (2, 4)}


def setup(steps: int):
    text = load_corpus()
    vocab = CharVocab.from_text(text)
    config = GPTConfig(vocab.size, n_blocks=4, d_model=32, n_heads=4, context=32)
    stack = BlockStack.from_gpt(build_gpt(config, seed=0))
    batches = list(lm_batches(vocab.encode(text), steps=steps, batch_size=8, context=32, seed=1))
    per_block = sum(p.numel() for p in stack.block(1).parameters())
    return stack, batches, 2.0 * per_block * config.context  # forward FLOPs of one block for one sequence


def run(stack, batches, flops_per_block: float, args, crash_at: float | None) -> dict:
    workspace = TrainWorkspace.from_stack(copy.deepcopy(stack), SPANS, flops_per_block=flops_per_block)
    client = TrainClient("client", SPANS, batches, micro_batches=args.micro_batches, timeout_s=args.timeout)
    sim = overlay_simulator([*(TrainServer(s, *span) for s, span in SPANS.items()), client])
    sim.executor = InlineExecutor(workspace)
    sim.devices = {s: DeviceProfile(args.gflops * 1e9, 1e9, 1e9) for s in SPANS}
    if crash_at is not None:
        sim.schedule_faults([Crash(crash_at, "a")])
    t0 = time.perf_counter()
    sim.run(until=1e6)
    return {"virtual_s": sim.now, "wall_s": time.perf_counter() - t0, "losses": client.losses,
            "step_s": np.diff([0.0, *client.committed_at]),
            "failures": client.failures, "redone_micro_batches": client.redone_micro_batches,
            "aborted_attempts": client.aborted_attempts, "digest_mismatches": client.digest_mismatches}


def checkpoint_restart(steps: int, step_s: float, crash_step: int, every: int, args) -> dict:
    lost_steps = crash_step % every
    writes = steps // every
    extra = lost_steps * step_s + args.timeout + args.restart_s + writes * args.ckpt_s
    expected = (every - 1) / 2 * step_s + args.timeout + args.restart_s + writes * args.ckpt_s
    return {"every": every, "lost_steps": lost_steps, "lost_work_s": round(lost_steps * step_s, 4),
            "checkpoint_writes": writes, "lost_s": round(extra, 4), "expected_lost_s_random_crash": round(expected, 4),
            "total_s": round(steps * step_s + extra, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--micro-batches", type=int, default=2)
    ap.add_argument("--gflops", type=float, default=1.0, help="compute speed of each server")
    ap.add_argument("--timeout", type=float, default=0.2, help="failure detection: the client's hop timeout (s)")
    ap.add_argument("--every", type=int, nargs="+", default=[10, 50, 100], help="checkpoint intervals K (steps)")
    ap.add_argument("--crash-at", type=float, default=0.47, help="crash time, as a fraction of the no-crash run")
    ap.add_argument("--ckpt-s", type=float, default=0.05, help="seconds to write one checkpoint")
    ap.add_argument("--restart-s", type=float, default=5.0, help="seconds to restart all workers and reload")
    args = ap.parse_args()
    torch.set_num_threads(1)
    stack, batches, flops = setup(args.steps)
    base = run(stack, batches, flops, args, None)
    step_s = float(np.median(base["step_s"]))
    crash = run(stack, batches, flops, args, base["virtual_s"] * args.crash_at)
    crash_step = crash["failures"][0]["step"] if crash["failures"] else args.steps // 2
    lost_s = float(np.max(crash["step_s"])) - step_s  # the failed step: detection + its redo
    diff = float(np.max(np.abs(np.subtract(crash["losses"], base["losses"])))) if len(crash["losses"]) == len(
        base["losses"]) else None
    restarts = [checkpoint_restart(args.steps, step_s, crash_step, k, args) for k in args.every]
    print(json.dumps({
        "steps": args.steps, "micro_batches": args.micro_batches, "step_s": round(step_s, 5),
        "swarm": {"total_s": round(base["virtual_s"], 4), "wall_s": round(base["wall_s"], 2)},
        "swarm_crash": {"total_s": round(crash["virtual_s"], 4), "lost_s": round(lost_s, 4),
                        "total_delta_s": round(crash["virtual_s"] - base["virtual_s"], 4), "crash_step": crash_step,
                        "committed": len(crash["losses"]), "lost_committed_updates": args.steps - len(crash["losses"]),
                        "redone_micro_batches": crash["redone_micro_batches"],
                        "digest_mismatches": crash["digest_mismatches"], "max_loss_diff_vs_no_crash": diff,
                        "wall_s": round(crash["wall_s"], 2)},
        "checkpoint_restart": restarts,
        "ratios_lost_s_restart_over_swarm": {r["every"]: round(r["lost_s"] / lost_s, 1) if lost_s > 0 else None
                                             for r in restarts},
    }, indent=1))


if __name__ == "__main__":
    main()
