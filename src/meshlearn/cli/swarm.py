"""`meshlearn swarm`: a model partitioned across server processes (issue 13, first real-process step).

    meshlearn swarm init gpt.safetensors                                   # an 8-block tiny GPT
    meshlearn swarm serve --model gpt.safetensors --blocks 0:4 --id s0 --listen 127.0.0.1:7300 --secret-file key
    meshlearn swarm infer --model gpt.safetensors --server s0=127.0.0.1:7300@0:4 --server s1=...@4:8 \\
        --requests 200 --out answers.npz --secret-file key

Each server loads only its blocks from the model file and runs them for whoever asks (authenticated
like every meshlearn socket); the client routes every request through the servers it was given,
and when one fails mid-request it continues from the last block it completed on another server.
This step takes the placement from the command line; self-placement over the overlay comes next.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from meshlearn.cli.deploy import INSECURE, SECRET_FILE, address, check_can_listen, read_secret
from meshlearn.errors import UsageError

swarm_app = typer.Typer(help="A model partitioned across server processes: init, serve a span, infer through them.",
                        no_args_is_help=True)


def _span(text: str, option: str) -> tuple[int, int]:
    start, sep, end = text.partition(":")
    if not (sep and start.isdigit() and end.isdigit() and int(start) < int(end)):
        raise UsageError(f"{option} {text!r} must look like START:END, e.g. 0:4 (blocks 0 to 3)")
    return int(start), int(end)


@swarm_app.command("init")
def init_cmd(out: Path = typer.Argument(..., help="Model file to write (safetensors)."),
             blocks: int = typer.Option(8, "--blocks", help="Transformer blocks of the tiny GPT."),
             seed: int = typer.Option(0, "--seed", help="Weight seed.")) -> None:
    """Write a tiny GPT (vocabulary of the shipped corpus) cut into --blocks blocks."""
    from meshlearn.data.text import CharVocab, load_corpus
    from meshlearn.models.gpt import GPTConfig, build_gpt
    from meshlearn.swarm.blocks import BlockStack

    vocab = CharVocab.from_text(load_corpus())
    stack = BlockStack.from_gpt(build_gpt(GPTConfig(vocab.size, n_blocks=blocks), seed))
    stack.save(out)
    typer.echo(f"wrote {out}: tiny GPT, {blocks} blocks, vocabulary {vocab.size}")


@swarm_app.command("serve")
def serve_cmd(model: Path = typer.Option(..., "--model", help="The swarm model file (`swarm init`)."),
              blocks: str = typer.Option(..., "--blocks", help="START:END, the blocks this server hosts."),
              node_id: str = typer.Option(..., "--id", help="This server's id."),
              listen: str = typer.Option("127.0.0.1:7300", "--listen", help="HOST:PORT to serve on."),
              duration: Optional[float] = typer.Option(None, "--duration", help="Stop after this many seconds."),
              secret_file: Optional[Path] = SECRET_FILE, insecure: bool = INSECURE) -> None:
    """Host blocks START..END-1 and run them for clients until killed (or --duration)."""
    start, end = _span(blocks, "--blocks")
    addr = address("--listen", listen, listening=True)
    secret = read_secret(secret_file, insecure)
    check_can_listen(listen, addr)
    from meshlearn.executors import InlineExecutor
    from meshlearn.runtime import AsyncioRuntime
    from meshlearn.split.modelfile import one_thread
    from meshlearn.swarm.blocks import BlockStack, SpanWorkspace
    from meshlearn.swarm.nodes import SwarmServer

    one_thread()  # torch's thread pool thrashes on small blocks (and the server runs one task at a time)
    stack = BlockStack.load(model, start, end)
    runtime = AsyncioRuntime(listen=addr, secret=secret, executor=InlineExecutor(SpanWorkspace(stack)))
    server = SwarmServer(node_id, start, end)
    runtime.add_node(server)
    print(f"{node_id} serving blocks {start}:{end} of {model} on {listen}", file=sys.stderr, flush=True)
    try:
        runtime.run_forever(duration)
    except KeyboardInterrupt:
        pass
    print(json.dumps({"served": server.served, "refused": server.refused}), flush=True)


@swarm_app.command("infer")
def infer_cmd(model: Path = typer.Option(..., "--model", help="The swarm model file (for its shapes and vocabulary)."),
              server: list[str] = typer.Option(..., "--server", help="ID=HOST:PORT@START:END, one per server."),
              requests: int = typer.Option(50, "--requests", help="Requests to send (token windows of the corpus)."),
              length: int = typer.Option(32, "--length", help="Tokens per request."),
              timeout: float = typer.Option(1.0, "--timeout", help="Seconds to wait for one hop before routing "
                                            "around its server."),
              seed: int = typer.Option(0, "--seed", help="Which windows of the corpus to send."),
              out: Optional[Path] = typer.Option(None, "--out", help="Write the inputs and answers here (npz)."),
              secret_file: Optional[Path] = SECRET_FILE, insecure: bool = INSECURE) -> None:
    """Send --requests token windows through the servers; print a JSON summary (answers in --out)."""
    spans, addresses = _servers(server)
    secret = read_secret(secret_file, insecure)
    import numpy as np

    from meshlearn.data.text import CharVocab, load_corpus
    from meshlearn.runtime import AsyncioRuntime
    from meshlearn.swarm.blocks import BlockStack
    from meshlearn.swarm.nodes import SwarmClient
    from meshlearn.swarm.placement import Server

    tokens = CharVocab.from_text(load_corpus()).encode(load_corpus())
    rng = np.random.default_rng(seed)
    inputs = [tokens[s:s + length][None, :].astype(np.int64) for s in rng.integers(0, len(tokens) - length, requests)]
    blocks = max(end for _, end in spans.values())
    view = {sid: Server(sid, 1.0, end - start, "A") for sid, (start, end) in spans.items()}
    specs = BlockStack.load(model, 0, 1).specs  # what a valid answer looks like at each boundary
    client = SwarmClient("client", {sid: start for sid, (start, _) in spans.items()}, view, blocks, inputs,
                         site="A", latency=lambda a, b: 0.0, timeout_s=timeout,
                         check=lambda boundary, y: specs[boundary].problem(y))
    runtime = AsyncioRuntime(peers=addresses, secret=secret)
    runtime.add_node(client)
    t0 = time.perf_counter()
    runtime.run_forever()
    answered = len(client.outputs)
    if out is not None:
        np.savez(out, inputs=np.stack(inputs), outputs=np.stack([client.outputs[i] for i in range(answered)]))
    print(json.dumps({"requests": requests, "answered": answered, "reroutes": client.reroutes,
                      "longest_stall_s": round(client.longest_wait, 3), "wall_s": round(time.perf_counter() - t0, 2)}),
          flush=True)
    if answered < requests:
        raise UsageError(f"only {answered} of {requests} requests were answered; are the servers running?")


def _servers(items: list[str]) -> tuple[dict[str, tuple[int, int]], dict[str, tuple[str, int]]]:
    spans, addresses = {}, {}
    for item in items:
        sid, sep, rest = item.partition("=")
        where, at, blocks = rest.partition("@")
        if not (sep and at and sid):
            raise UsageError(f"--server {item!r} must look like ID=HOST:PORT@START:END, e.g. s0=127.0.0.1:7300@0:4")
        spans[sid], addresses[sid] = _span(blocks, f"--server {sid}"), address(f"--server {sid}", where)
    return spans, addresses
