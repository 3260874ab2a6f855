"""`meshlearn swarm train` and `swarm train-serve`: pipeline training through server processes (issue 13).

    meshlearn swarm init gpt.safetensors --blocks 4
    meshlearn swarm train-serve --model gpt.safetensors --blocks 0:2 --id s0 --listen 127.0.0.1:7400 --secret-file key
    meshlearn swarm train --model gpt.safetensors --server s0=127.0.0.1:7400@0:2 --server s1=...@0:2 \\
        --server s2=...@2:4 --server s3=...@2:4 --steps 300 --micro-batches 2 --out curve.json --secret-file key

A training server loads only its blocks from the model file and keeps their optimizer (Adam) state; the
client drives each step through a chain of servers, relays each block's gradient to the block's other
holders so replicas stay identical, and redoes a step through replicas when a chain server dies before
the step is committed (:mod:`meshlearn.swarm.training`). The client prints a JSON summary and writes the
loss curve to ``--out`` (JSON, or CSV when the name ends in ``.csv``).

Both commands are registered under ``meshlearn swarm`` by :mod:`meshlearn.cli.swarm`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from meshlearn.cli.deploy import (
    INSECURE,
    SECRET_FILE,
    TIMEOUT,
    address,
    check_can_listen,
    read_secret,
)
from meshlearn.errors import UsageError

__all__ = ["train_cmd", "train_serve_cmd"]

Opt = typer.Option


def _span(text: str, option: str) -> tuple[int, int]:
    from meshlearn.cli.swarm import _span as span  # one parser for START:END (lazy: swarm.py imports us)

    return span(text, option)


def _servers(items: list[str]):
    from meshlearn.cli.swarm import _servers as servers

    return servers(items)


def train_serve_cmd(
    model: Annotated[Path, Opt("--model", help="The swarm model file (`swarm init`).")],
    blocks: Annotated[str, Opt("--blocks", help="START:END, the blocks this server trains.")],
    node_id: Annotated[str, Opt("--id", help="This server's id.")],
    listen: Annotated[str, Opt("--listen", help="HOST:PORT to serve on.")] = "127.0.0.1:7400",
    lr: Annotated[float, Opt("--lr", help="Adam learning rate of this server's blocks.")] = 3e-3,
    duration: Annotated[float | None, Opt("--duration", help="Stop after this many seconds.")] = None,
    secret_file: Path | None = SECRET_FILE, insecure: bool = INSECURE,
) -> None:
    """Hold blocks START..END-1 and their optimizer state; train them for clients until killed (or --duration)."""
    start, end = _span(blocks, "--blocks")
    addr = address("--listen", listen, listening=True)
    secret = read_secret(secret_file, insecure)
    check_can_listen(listen, addr)
    from meshlearn.executors import InlineExecutor
    from meshlearn.runtime import AsyncioRuntime
    from meshlearn.split.modelfile import one_thread
    from meshlearn.swarm.blocks import BlockStack
    from meshlearn.swarm.train_blocks import TrainWorkspace
    from meshlearn.swarm.training import TrainServer

    one_thread()  # same thread count as a single-process run: same float sums
    workspace = TrainWorkspace({node_id: BlockStack.load(model, start, end)}, lr=lr)
    runtime = AsyncioRuntime(listen=addr, secret=secret, executor=InlineExecutor(workspace))
    server = TrainServer(node_id, start, end)
    runtime.add_node(server)
    print(f"{node_id} training blocks {start}:{end} of {model} on {listen}", file=sys.stderr, flush=True)
    try:
        runtime.run_forever(duration)
    except KeyboardInterrupt:
        pass
    print(json.dumps({"served": server.served, "refused": server.refused, "steps_applied": server.version}),
          flush=True)


class _Progress:
    """The client's metric sink: prints ``step K loss L`` to stderr every ``every`` steps."""

    def __init__(self, every: int):
        self.every = every

    def log(self, key: str, value: float, *, round=None, **_) -> None:
        if key == "loss" and self.every > 0 and round is not None and (round + 1) % self.every == 0:
            print(f"step {round + 1} loss {value:.6f}", file=sys.stderr, flush=True)


def train_cmd(
    model: Annotated[Path, Opt("--model", help="The swarm model file (for its shapes and context).")],
    server: Annotated[list[str], Opt("--server", help="ID=HOST:PORT@START:END, one per server.")],
    steps: Annotated[int, Opt("--steps", help="Optimizer steps.")] = 100,
    batch_size: Annotated[int, Opt("--batch-size", help="Token windows per step.")] = 8,
    micro_batches: Annotated[int, Opt("--micro-batches", help="Micro-batches per step (pipelined).")] = 1,
    seed: Annotated[int, Opt("--seed", help="Which windows of the corpus (as in train_lm).")] = 0,
    hop_timeout: Annotated[float, Opt("--hop-timeout", help="Seconds without an answer before a server is given "
                                      "up on (and the step redone through a replica).")] = 1.0,
    progress: Annotated[int, Opt("--progress", help="Print the loss every this many steps (0: never).")] = 10,
    out: Annotated[Path | None, Opt("--out", help="Write the loss curve here (.json or .csv).")] = None,
    timeout: float | None = TIMEOUT,
    secret_file: Path | None = SECRET_FILE, insecure: bool = INSECURE,
) -> None:
    """Train the model held by the servers for --steps steps; print a JSON summary (curve in --out)."""
    spans, addresses = _servers(server)
    secret = read_secret(secret_file, insecure)
    if steps < 1 or batch_size < 1 or micro_batches < 1:
        raise UsageError("--steps, --batch-size and --micro-batches must be at least 1")
    client, wall = _run_client(model, spans, addresses, secret, steps=steps, batch_size=batch_size,
                               micro_batches=micro_batches, seed=seed, hop_timeout=hop_timeout, progress=progress,
                               timeout=timeout)
    summary = _summary(client, steps, wall)
    if out is not None:
        _write_curve(out, client, summary)
    print(json.dumps(summary), flush=True)
    if len(client.losses) < steps:
        raise UsageError(f"only {len(client.losses)} of {steps} steps were committed; are the servers running and "
                         "does every block still have a live holder?")


def _run_client(model: Path, spans, addresses, secret, *, steps: int, batch_size: int, micro_batches: int, seed: int,
                hop_timeout: float, progress: int, timeout: float | None):
    from meshlearn.data.text import CharVocab, load_corpus
    from meshlearn.models.gpt import lm_batches
    from meshlearn.runtime import AsyncioRuntime
    from meshlearn.swarm.blocks import BlockStack
    from meshlearn.swarm.training import TrainClient

    text = load_corpus()
    tokens = CharVocab.from_text(text).encode(text)
    head = BlockStack.load(model, 0, 1)  # shapes and context; the weights live on the servers
    context = head.recipe["config"]["context"]
    batches = list(lm_batches(tokens, steps=steps, batch_size=batch_size, context=context, seed=seed))
    client = TrainClient("client", spans, batches, micro_batches=micro_batches, timeout_s=hop_timeout,
                         check=lambda boundary, y: head.specs[boundary].problem(y))
    runtime = AsyncioRuntime(peers=addresses, secret=secret, sink=_Progress(progress))
    runtime.add_node(client)
    t0 = time.perf_counter()
    runtime.run_forever(timeout)
    return client, time.perf_counter() - t0


def _summary(client, steps: int, wall: float) -> dict:
    return {"steps": steps, "committed": len(client.losses),
            "first_loss": client.losses[0] if client.losses else None,
            "final_loss": client.losses[-1] if client.losses else None,
            "failures": [{k: f[k] for k in ("step", "server", "phase")} for f in client.failures],
            "aborted_attempts": client.aborted_attempts, "redone_micro_batches": client.redone_micro_batches,
            "digest_mismatches": client.digest_mismatches, "wall_s": round(wall, 2),
            "steps_per_s": round(len(client.losses) / wall, 2) if wall > 0 else None}


def _write_curve(out: Path, client, summary: dict) -> None:
    if out.suffix == ".csv":
        out.write_text("step,loss\n" + "".join(f"{i},{loss!r}\n" for i, loss in enumerate(client.losses)))
        return
    out.write_text(json.dumps({**summary, "losses": client.losses, "digests": client.digests}, indent=1))
