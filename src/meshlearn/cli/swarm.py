"""`meshlearn swarm`: a model partitioned across server processes (issue 13).

    meshlearn swarm init gpt.safetensors                                   # an 8-block tiny GPT
    meshlearn swarm serve --model gpt.safetensors --blocks 0:4 --id s0 --listen 127.0.0.1:7300 --secret-file key
    meshlearn swarm infer --model gpt.safetensors --server s0=127.0.0.1:7300@0:4 --server s1=...@4:8 \\
        --requests 200 --out answers.npz --secret-file key
    meshlearn swarm generate --model gpt.safetensors --server ... --prompt "The weather " --tokens 40 --check

``generate`` is its own command rather than ``infer --generate``: it keeps a session (KV caches) on every
hop's server and sends one position per token, where ``infer`` sends independent stateless requests, and
its options (prompt, tokens, sampling, --check) and output (the text, streamed, then a JSON summary) have
nothing in common with ``infer``'s --requests/--length/--out.

Each server loads only its blocks from the model file and runs them for whoever asks (authenticated
like every meshlearn socket); the client routes every request through the servers it was given,
and when one fails mid-request it continues from the last block it completed on another server.
Servers started without --blocks place themselves: they announce to the --join servers, learn the swarm
(``meshlearn.swarm.announce``), take the span the shared placement rule gives them and move when a crash
leaves a block below its replica target; ``infer`` / ``generate`` / ``status`` with --join learn the
placement from the swarm the same way.

    meshlearn swarm serve --model gpt.safetensors --id s1 --listen 127.0.0.1:7301 --join s0=127.0.0.1:7300
    meshlearn swarm status --model gpt.safetensors --join s0=127.0.0.1:7300
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from meshlearn.cli.console import RUNS_DIR_HELP
from meshlearn.cli.deploy import INSECURE, SECRET_FILE, address, check_can_listen, read_secret
from meshlearn.cli.swarm_train import train_cmd, train_serve_cmd
from meshlearn.errors import UsageError

swarm_app = typer.Typer(help="A model partitioned across server processes: init, serve a span, infer, generate "
                        "and train through them, status.", no_args_is_help=True)


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


JOIN = typer.Option([], "--join", help="ID=HOST:PORT of a swarm server to learn the swarm from (repeatable).")


@swarm_app.command("serve")
def serve_cmd(model: Path = typer.Option(..., "--model", help="The swarm model file (`swarm init`)."),
              node_id: str = typer.Option(..., "--id", help="This server's id."),
              blocks: Optional[str] = typer.Option(None, "--blocks", help="START:END: host exactly these blocks "
                                                   "(never moved). Without it, the server places itself."),
              capacity: Optional[int] = typer.Option(None, "--capacity", help="Blocks this server can hold when it "
                                                     "places itself (default: half the model)."),
              join: list[str] = JOIN,
              listen: str = typer.Option("127.0.0.1:7300", "--listen", help="HOST:PORT to serve on."),
              advertise: Optional[str] = typer.Option(None, "--advertise", help="HOST:PORT others reach this "
                                                      "server at (default: --listen)."),
              target: int = typer.Option(2, "--target", help="Replicas wanted per block (self-placement)."),
              duration: Optional[float] = typer.Option(None, "--duration", help="Stop after this many seconds."),
              runs_dir: Optional[Path] = typer.Option(None, "--runs-dir", help=RUNS_DIR_HELP + " Each period's "
                                                      "span, rate, requests and view go to a run there."),
              max_sessions: int = typer.Option(64, "--max-sessions", help="Generation sessions held at once (KV "
                                               "caches); one more is refused."),
              session_ttl: float = typer.Option(60.0, "--session-ttl", help="Seconds an idle generation session "
                                                "is kept."),
              secret_file: Optional[Path] = SECRET_FILE, insecure: bool = INSECURE) -> None:
    """Host a span of blocks and run it for clients until killed (or --duration); announce it to the swarm.

    With --blocks the span is fixed. Without it the server announces itself to the --join servers, learns
    the swarm from them, takes the span the shared placement rule gives it, and moves when a block falls
    below --target replicas after a crash."""
    span = _span(blocks, "--blocks") if blocks is not None else None
    addr = address("--listen", listen, listening=True)
    seeds = _joins(join)
    secret = read_secret(secret_file, insecure)
    check_can_listen(listen, addr)
    from meshlearn.executors import InlineExecutor
    from meshlearn.runtime import AsyncioRuntime
    from meshlearn.split.modelfile import one_thread
    from meshlearn.swarm.announce import AnnouncingServer
    from meshlearn.swarm.blocks import BlockStack, SpanWorkspace
    from meshlearn.swarm.modelfile import read_header

    one_thread()  # torch's thread pool thrashes on small blocks (and the server runs one task at a time)
    stack = BlockStack.load(model, 0, 1)  # the recipe; the span is loaded by the server's first task
    size = _size(span, capacity, stack.num_blocks)
    run = _open_run(runs_dir, node_id, model, listen, span, size, target)
    runtime = AsyncioRuntime(listen=addr, secret=secret, peers=seeds, sink=_Stream(run.metrics),
                             executor=InlineExecutor(SpanWorkspace(stack, model=model)))
    server = AnnouncingServer(node_id, span[0] if span else None, size, blocks=stack.num_blocks, seeds=list(seeds),
                              digests=read_header(model).digests, target=target, addr=advertise or listen,
                              learn=_learner(runtime), movable=span is None, max_sessions=max_sessions,
                              session_ttl_s=session_ttl)
    runtime.add_node(server)
    where = f"blocks {span[0]}:{span[1]}" if span else f"{size} blocks, placing itself"
    print(f"{node_id} serving {where} of {model} on {listen}; run {run.id}", file=sys.stderr, flush=True)
    ended = "failed"
    try:
        runtime.run_forever(duration)
        ended = "completed"
    except KeyboardInterrupt:
        ended = "interrupted"
    finally:
        run.finish(ended, **{f"stat_{k}": v for k, v in runtime.stats.items() if v})
    print(json.dumps({"served": server.served, "steps": server.steps_served, "refused": server.refused,
                      "blocks": f"{server.start}:{server.end}", "moves": server.moves,
                      "rejected": dict(server.directory.rejected),
                      "runtime": {k: v for k, v in runtime.stats.items() if v}}), flush=True)


def _open_run(runs_dir, node_id: str, model: Path, listen: str, span, size: int, target: int):
    import tomli_w

    from meshlearn.store import RunStore

    options = {"id": node_id, "model": str(model), "listen": listen, "size": size, "target": target,
               "blocks": f"{span[0]}:{span[1]}" if span else "self-placed"}
    return RunStore(runs_dir).create_run(f"swarm-serve-{node_id}", tomli_w.dumps(options),
                                         {"kind": "swarm-serve", "command": "meshlearn swarm serve"})


class _Stream:
    """The runtime's metric sink: rows into the run's metrics, committed at least every 2 s (readable live)."""

    def __init__(self, metrics):
        self.metrics, self.flushed = metrics, time.monotonic()

    def log(self, key: str, value: float, **kw) -> None:
        self.metrics.log(key, value, **kw)
        if time.monotonic() - self.flushed > 2.0:
            self.metrics.flush()
            self.flushed = time.monotonic()


def _size(span: tuple[int, int] | None, capacity: int | None, num_blocks: int) -> int:
    if span is not None:
        if capacity is not None:
            raise UsageError("give --blocks (a fixed span) or --capacity (place itself), not both")
        if span[1] > num_blocks:
            raise UsageError(f"--blocks {span[0]}:{span[1]} reaches past the model's {num_blocks} blocks")
        return span[1] - span[0]
    size = capacity if capacity is not None else max(1, num_blocks // 2)
    if not 1 <= size <= num_blocks:
        raise UsageError(f"--capacity must be 1..{num_blocks} (the model's blocks), got {size}")
    return size


def _joins(items: list[str]) -> dict[str, tuple[str, int]]:
    out = {}
    for item in items:
        sid, sep, where = item.partition("=")
        if not (sep and sid):
            raise UsageError(f"--join {item!r} must look like ID=HOST:PORT, e.g. s0=127.0.0.1:7300")
        out[sid] = address(f"--join {sid}", where)
    return out


def _learner(runtime):
    """``learn(server, "HOST:PORT")`` for the swarm nodes: add an announced server to the address book."""
    def learn(server: str, where: str) -> None:
        try:
            runtime.peers[server] = address(f"{server}'s announced address", where)
        except UsageError:
            pass  # an unusable address: the server stays unreachable, the announcement was checked otherwise
    return learn


@swarm_app.command("infer")
def infer_cmd(model: Path = typer.Option(..., "--model", help="The swarm model file (for its shapes and vocabulary)."),
              server: list[str] = typer.Option([], "--server", help="ID=HOST:PORT@START:END, one per server "
                                               "(a placement you give); or use --join."),
              join: list[str] = JOIN,
              requests: int = typer.Option(50, "--requests", help="Requests to send (token windows of the corpus)."),
              length: int = typer.Option(32, "--length", help="Tokens per request."),
              timeout: float = typer.Option(1.0, "--timeout", help="Seconds to wait for one hop before routing "
                                            "around its server."),
              seed: int = typer.Option(0, "--seed", help="Which windows of the corpus to send."),
              out: Optional[Path] = typer.Option(None, "--out", help="Write the inputs and answers here (npz)."),
              secret_file: Optional[Path] = SECRET_FILE, insecure: bool = INSECURE) -> None:
    """Send --requests token windows through the servers; print a JSON summary (answers in --out).

    The servers are the --server list, or whatever the swarm that the --join servers belong to announces."""
    spans, addresses = _placement_options(server, join)
    secret = read_secret(secret_file, insecure)
    import numpy as np

    from meshlearn.data.text import CharVocab, load_corpus
    from meshlearn.runtime import AsyncioRuntime
    from meshlearn.swarm.blocks import BlockStack

    tokens = CharVocab.from_text(load_corpus()).encode(load_corpus())
    rng = np.random.default_rng(seed)
    inputs = [tokens[s:s + length][None, :].astype(np.int64) for s in rng.integers(0, len(tokens) - length, requests)]
    specs = BlockStack.load(model, 0, 1).specs  # what a valid answer looks like at each boundary
    runtime = AsyncioRuntime(peers=addresses, secret=secret)
    client = _client(model, spans, runtime, "stateless", inputs, site="A", latency=lambda a, b: 0.0, timeout_s=timeout,
                     check=lambda boundary, y: specs[boundary].problem(y))
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


def _placement_options(server: list[str], join: list[str]):
    """(spans or None, address book) from --server (a given placement) or --join (learn it)."""
    if bool(server) == bool(join):
        raise UsageError("give the servers with --server ID=HOST:PORT@START:END (a placement you know), or "
                         "--join ID=HOST:PORT (learn it from the swarm): one of the two")
    return _servers(server) if server else (None, _joins(join))


def _client(model: Path, spans, runtime, kind: str, *args, **kw):
    """The client node: over the given ``spans``, or following the swarm's directory (``spans`` None)."""
    from meshlearn.swarm.announce import DirectoryClient, DirectoryGenerator
    from meshlearn.swarm.generate import GenerationClient
    from meshlearn.swarm.modelfile import read_header
    from meshlearn.swarm.nodes import SwarmClient
    from meshlearn.swarm.placement import Server

    if spans is None:
        cls = DirectoryClient if kind == "stateless" else DirectoryGenerator
        header = read_header(model)
        return cls("client", list(runtime.peers), header.blocks, *args, digests=header.digests,
                   learn=_learner(runtime), **kw)
    cls = SwarmClient if kind == "stateless" else GenerationClient
    view = {sid: Server(sid, 1.0, end - start, "A") for sid, (start, end) in spans.items()}
    return cls("client", {sid: start for sid, (start, _) in spans.items()}, view,
               max(end for _, end in spans.values()), *args, **kw)


@swarm_app.command("generate")
def generate_cmd(model: Path = typer.Option(..., "--model", help="The swarm model file (for its shapes and vocabulary)."),
                 server: list[str] = typer.Option([], "--server", help="ID=HOST:PORT@START:END, one per server "
                                                  "(a placement you give); or use --join."),
                 join: list[str] = JOIN,
                 prompt: str = typer.Option(..., "--prompt", help="Text to continue (characters of the corpus)."),
                 tokens: int = typer.Option(40, "--tokens", help="Tokens (characters) to generate."),
                 temperature: float = typer.Option(0.0, "--temperature", help="0: greedy; else sample softmax(logits/T)."),
                 top_k: int = typer.Option(0, "--top-k", help="Sample among the K likeliest tokens (0: all)."),
                 seed: int = typer.Option(0, "--seed", help="Seed of the sampler (the same seed gives the same text)."),
                 timeout: float = typer.Option(1.0, "--timeout", help="Seconds to wait for one hop before routing "
                                               "around its server."),
                 check: bool = typer.Option(False, "--check", help="Also generate in this process from the model "
                                            "file and report whether the texts are equal."),
                 secret_file: Optional[Path] = SECRET_FILE, insecure: bool = INSECURE) -> None:
    """Continue --prompt by --tokens tokens through the servers (KV caches kept on them); stream the text, then
    print a JSON summary (tokens, rebuilds, longest stall)."""
    spans, addresses = _placement_options(server, join)
    secret = read_secret(secret_file, insecure)
    from meshlearn.data.text import CharVocab, load_corpus
    from meshlearn.swarm.blocks import BlockStack
    from meshlearn.swarm.generate import Sampler

    vocab, specs = CharVocab.from_text(load_corpus()), BlockStack.load(model, 0, 1).specs
    ids = vocab.encode(prompt)[None, :]
    if tokens < 1 or ids.shape[1] < 1 or ids.shape[1] + tokens - 1 > specs[0].max_len:
        raise UsageError(f"a prompt of {ids.shape[1]} characters and --tokens {tokens} do not fit the model's context "
                         f"of {specs[0].max_len} positions: need prompt >= 1, tokens >= 1, prompt + tokens - 1 <= "
                         f"{specs[0].max_len}")
    print(prompt, end="", flush=True)
    client, wall = _generate(model, spans, addresses, secret, ids, tokens, Sampler(temperature, top_k, seed),
                             timeout, specs, lambda i, t: print(vocab.decode(t[:1]), end="", flush=True))
    summary = _summary(client, wall, vocab)
    if check:
        from meshlearn.swarm.blocks import generate_local

        local = generate_local(BlockStack.load(model), ids, tokens, Sampler(temperature, top_k, seed))
        summary["matches_local"] = bool(client.done and (local == client.generated).all())
    print(flush=True)
    print(json.dumps(summary), flush=True)
    if not client.done:
        raise UsageError(f"only {client.generated.shape[1]} of {tokens} tokens were generated; are the servers running?")


def _generate(model, spans, addresses, secret, ids, tokens, sampler, timeout, specs, on_token):
    """Run a generating client over the servers on a real runtime; returns it and the wall time."""
    from meshlearn.runtime import AsyncioRuntime

    runtime = AsyncioRuntime(peers=addresses, secret=secret)
    client = _client(model, spans, runtime, "generate", ids, tokens, site="A", latency=lambda a, b: 0.0,
                     sampler=sampler, timeout_s=timeout, check=lambda b, y: specs[b].problem(y), on_token=on_token)
    runtime.add_node(client)
    t0 = time.perf_counter()
    runtime.run_forever()
    return client, time.perf_counter() - t0


@swarm_app.command("status")
def status_cmd(model: Path = typer.Option(..., "--model", help="The swarm model file (to check announcements)."),
               join: list[str] = JOIN,
               wait: float = typer.Option(1.5, "--wait", help="Seconds to collect announcements."),
               as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
               secret_file: Optional[Path] = SECRET_FILE, insecure: bool = INSECURE) -> None:
    """Which server hosts which blocks, at what measured rate, and how many replicas each block has."""
    if not join:
        raise UsageError("give at least one --join ID=HOST:PORT of a swarm server")
    seeds = _joins(join)
    secret = read_secret(secret_file, insecure)
    from meshlearn.runtime import AsyncioRuntime
    from meshlearn.swarm.announce import StatusProbe
    from meshlearn.swarm.modelfile import read_header

    header = read_header(model)  # no torch: status starts at once
    runtime = AsyncioRuntime(peers=seeds, secret=secret)
    probe = StatusProbe("status", list(seeds), header.blocks, digests=header.digests, wait_s=wait,
                        learn=_learner(runtime))
    runtime.add_node(probe)
    runtime.run_forever()
    d = probe.directory
    report = {"servers": d.table(runtime.now), "replicas": d.replicas(), "rejected": dict(d.rejected)}
    typer.echo(json.dumps(report) if as_json else _status_text(report))
    if not d.entries:
        raise UsageError("no server answered; are the --join addresses and the secret right?")


def _status_text(report: dict) -> str:
    lines = [f"{'server':<12} {'blocks':<9} {'rate/s':>8} {'site':<6} {'age s':>6}"]
    lines += [f"{r['server']:<12} {r['blocks']:<9} {r['rate']:>8} {r['site']:<6} {r['age_s']:>6}"
              for r in report["servers"]]
    reps = report["replicas"]
    lines.append(f"replicas per block: {' '.join(map(str, reps))} (weakest: block {reps.index(min(reps))}, {min(reps)})")
    if report["rejected"]:
        lines.append("refused announcements: " + ", ".join(f"{k} {v}" for k, v in sorted(report["rejected"].items())))
    return "\n".join(lines)


def _summary(client, wall: float, vocab) -> dict:
    generated = client.generated
    return {"tokens": int(generated.shape[1]), "text": vocab.decode(generated[0]), "rebuilds": client.rebuilds,
            "rebuilt_positions": client.rebuilt_positions, "reroutes": client.reroutes, "lost_sessions": client.lost,
            "longest_stall_s": round(client.longest_wait, 3), "longest_token_gap_s": round(client.longest_token_gap, 3),
            "wall_s": round(wall, 2)}


def _servers(items: list[str]) -> tuple[dict[str, tuple[int, int]], dict[str, tuple[str, int]]]:
    spans, addresses = {}, {}
    for item in items:
        sid, sep, rest = item.partition("=")
        where, at, blocks = rest.partition("@")
        if not (sep and at and sid):
            raise UsageError(f"--server {item!r} must look like ID=HOST:PORT@START:END, e.g. s0=127.0.0.1:7300@0:4")
        spans[sid], addresses[sid] = _span(blocks, f"--server {sid}"), address(f"--server {sid}", where)
    return spans, addresses


swarm_app.command("train")(train_cmd)
swarm_app.command("train-serve")(train_serve_cmd)
