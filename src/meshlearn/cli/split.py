"""`meshlearn split train | infer | serve | heatmap`: split models, and the head and tail as real processes.

    meshlearn split train --out cnn.safetensors                     # split_cnn on digits, ~10 s
    meshlearn split serve --model cnn.safetensors --listen 0.0.0.0:7100 --secret-file key     # tail (server)
    meshlearn split infer --model cnn.safetensors --server HOST:7100 --loss 0.3 --secret-file key  # head
    meshlearn split infer --model cnn.safetensors --loss 0.3 --simulate   # same nodes, simulated network
    meshlearn split heatmap --model cnn.safetensors --sample 0 --loss 0.5 --out cut.png

`train` and `infer --simulate` are shortcuts for a split experiment (`meshlearn run` of a file with
kind = "split"): they build its config, run it through the run store and print the study's JSON.
Option defaults come from the experiment's models (`meshlearn config show --kind split`). Channel
options must match on both sides: every chunk carries a digest of them; the tail drops (and
counts) chunks from a head with other options and answers with its own, so `infer` stops with an
error (exit 2) naming each setting that differs; if nothing at all comes back within
`--reply-timeout`, `infer` stops with an error listing the likely causes. `--loss` is injected by
the head before sending, keyed on `--seed` and the sample index, so `infer --simulate` with the
same seed drops the same packets.

This module loads only when a `split` command runs (see `meshlearn.cli`), so it may import the
split package at the top.
"""

from __future__ import annotations

import json
import logging
import secrets
import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer
from pydantic import BaseModel

from meshlearn.cli.console import RUNS_DIR_HELP, err
from meshlearn.cli.deploy import (CLIENT_KEYS, INSECURE, KEY_FILE, SECRET_FILE, address, check_can_listen,
                                  client_credential, read_secret, server_keys)
from meshlearn.errors import ConfigError, UsageError
from meshlearn.experiment.split import DEFAULT_CHANNEL
from meshlearn.split.modelfile import (HEAD_ID, TAIL_ID, build_nodes, head_fn, load_split_model, one_thread, tail_fn,
                                       test_samples)
from meshlearn.split.studies import InferStudy, TrainStudy

split_app = typer.Typer(help="Split computing: train, COMtune and search split models; serve the tail and run the "
                        "head over UDP; MWJC link/model bandit.", no_args_is_help=True, rich_markup_mode=None)

CHANNEL = DEFAULT_CHANNEL()


def option(model: type[BaseModel] | BaseModel, field: str, *flags: str):
    """A typer option whose default and help come from ``model``'s field (an instance: its value)."""
    info = type(model).model_fields[field] if isinstance(model, BaseModel) else model.model_fields[field]
    default = getattr(model, field) if isinstance(model, BaseModel) else info.get_default(call_default_factory=True)
    return typer.Option(default, *flags, help=(info.description or "").rstrip(".") + ".")


MODEL = typer.Option(..., "--model", help="Split model file written by `meshlearn split train`.")
RUNS_DIR = typer.Option(None, "--runs-dir", help=RUNS_DIR_HELP)
QUANT = option(CHANNEL, "quant", "--quant")
BITS = option(CHANNEL, "bits", "--bits")
ELEMENTS = typer.Option(CHANNEL.elements_per_packet or 0, "--elements", help="Elements per packet (0: as many as "
                        "fit --mtu).")
ORDER = option(CHANNEL, "order", "--order")
PERM_SEED = option(CHANNEL, "perm_seed", "--perm-seed")
MTU = option(CHANNEL, "mtu", "--mtu")
COMPRESS = option(CHANNEL, "compress", "--compress")
DEADLINE = typer.Option(CHANNEL.deadline_s, "--deadline", help="Tail: seconds after a sample's first packet to run "
                        "on what arrived.")
REACH = option(CHANNEL, "reach_rate", "--reach-rate")
RESCALE = option(CHANNEL, "rescale", "--rescale")
RESCALE_P = option(CHANNEL, "rescale_p", "--rescale-p")
BURST = option(InferStudy, "burst", "--burst")


def channel(quant: str, bits: int, elements: int, order: str, perm_seed: int, mtu: int, compress: str = "none",
            deadline: float | None = None, reach_rate: float | None = None, rescale: str = "none",
            rescale_p: float = 0.0) -> dict[str, Any]:
    """The ``[channel]`` section the options describe (validated with the experiment)."""
    if deadline is not None and deadline <= 0:
        raise UsageError(f"--deadline must be a positive number of seconds, got {deadline}")
    return dict(quant=quant, bits=bits, elements_per_packet=elements or None, order=order, perm_seed=perm_seed,
                mtu=mtu, compress=compress, deadline_s=deadline, reach_rate=reach_rate, rescale=rescale,
                rescale_p=rescale_p)


def channel_spec(*args: Any, **kwargs: Any):
    """The ChannelSpec the options describe (for the real-process commands); bad values: one ``key: reason`` line."""
    from meshlearn.config import validate_config
    from meshlearn.split.channel import ChannelSpec

    return validate_config(ChannelSpec, channel(*args, **kwargs))


def run_study(data: dict[str, Any], runs_dir: Optional[Path]) -> dict:
    """Validate ``data`` as a split experiment, run it into the run store, return the study's results."""
    from meshlearn.cli.console import Reporter
    from meshlearn.config import validate_config
    from meshlearn.experiment import run_experiment
    from meshlearn.experiment.studies import RESULTS_FILE
    from meshlearn.experiment.split import config_model
    from meshlearn.store import RunStore

    cfg = validate_config(config_model(), {"kind": "split", **data})
    with Reporter("step", quiet=False) as reporter:
        run = run_experiment(cfg, RunStore(runs_dir), progress=reporter)
    err.print(f"stored as run {run.id} ({run.path})", highlight=False)
    return json.loads((run.path / RESULTS_FILE).read_text())


def check_out(out: Optional[Path]) -> None:
    """An --out path must be in an existing directory (checked before any work is done)."""
    if out is not None and not out.parent.is_dir():
        raise UsageError(f"--out {out}: directory {out.parent} does not exist; create it first")


# ----- commands ---------------------------------------------------------------------------
@split_app.command("train")
def train_cmd(out: Path = typer.Option(..., "--out", help="Where to write the model file (safetensors)."),
              epochs: int = option(TrainStudy, "epochs", "--epochs"), seed: int = typer.Option(0, "--seed",
              help="Seed of weights, batch order and the train/test split."),
              cut: str = option(TrainStudy, "cut", "--cut"), bottleneck: Optional[int] = option(TrainStudy, "bottleneck",
              "--bottleneck"), batch_norm: bool = option(TrainStudy, "batch_norm", "--batch-norm/--no-batch-norm"),
              runs_dir: Optional[Path] = RUNS_DIR) -> None:
    """Train split_cnn on digits and write a model file for `split serve` / `split infer` / `split tune`."""
    check_out(out)
    result = run_study({"name": "split-train", "seed": seed, "study": "train",
                        "train": {"epochs": epochs, "cut": cut, "bottleneck": bottleneck, "batch_norm": batch_norm,
                                  "out": str(out)}}, runs_dir)
    print(json.dumps(result), flush=True)


@split_app.command("serve")
def serve_cmd(
    model: Path = MODEL,
    listen: str = typer.Option("127.0.0.1:7100", "--listen", help="HOST:PORT (UDP) to receive cut tensors on; "
                               "port 0 picks a free one."),
    duration: Optional[float] = typer.Option(None, "--duration", help="Stop after this many seconds "
                                             "[default: until Ctrl-C]."),
    quant: str = QUANT, bits: int = BITS, elements: int = ELEMENTS, order: str = ORDER, perm_seed: int = PERM_SEED,
    mtu: int = MTU, compress: str = COMPRESS, deadline: float = DEADLINE, reach_rate: Optional[float] = REACH,
    rescale: str = RESCALE, rescale_p: float = RESCALE_P,
    secret_file: Optional[Path] = SECRET_FILE, insecure: bool = INSECURE, client_keys: bool = CLIENT_KEYS,
) -> None:
    """Run the tail (status on stderr, results on stdout): rebuild each sample from the packets that arrive by the deadline, reply with the class.

    Prints `serving ... on HOST:PORT` when ready and, on exit (--duration or Ctrl-C), one JSON line
    of counters: samples answered, packets, late/duplicate chunks, chunks with another channel spec
    (each such head is sent this tail's settings, at most once a second: settings_sent), and the
    runtime's rejected datagrams (bad MAC or undecodable).
    """
    import asyncio

    from meshlearn.runtime.aio import AsyncioRuntime
    from meshlearn.split.nodes import SplitTail

    addr = address("--listen", listen, listening=True)
    spec = channel_spec(quant, bits, elements, order, perm_seed, mtu, compress, deadline, reach_rate, rescale,
                        rescale_p)
    secret = server_keys(secret_file, insecure, client_keys, who="head")
    check_can_listen(listen, addr)
    one_thread()
    split, meta = load_split_model(model)
    tail = SplitTail(TAIL_ID, tail_fn(split), split.cut_shape, spec)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(message)s")
    runtime = AsyncioRuntime(listen=addr, secret=secret)
    runtime.add_node(tail)

    async def serve() -> None:
        await runtime.start()
        host, port = runtime.address
        print(f"serving the tail of {model} ({meta['model']} cut after {meta['cut']}, {tuple(split.cut_shape)}) "
              f"on {host}:{port}", file=sys.stderr, flush=True)
        await runtime.run(timeout=duration)

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
    finally:
        counters = {**dict(tail.stats),
                    **{k: runtime.stats[k] for k in ("datagrams_rejected", "datagrams_replayed", "peer_errors")}}
        print(json.dumps(counters), flush=True)


@split_app.command("infer")
def infer_cmd(
    model: Path = MODEL,
    server: str = typer.Option("127.0.0.1:7100", "--server", help="HOST:PORT of `split serve`."),
    samples: int = option(InferStudy, "samples", "--samples"),
    loss: float = option(InferStudy, "loss", "--loss"),
    seed: int = typer.Option(0, "--seed", help="Seed of the injected loss (keyed per sample)."),
    burst: Optional[float] = BURST,
    window: int = option(InferStudy, "window", "--window"),
    reply_timeout: float = option(InferStudy, "reply_timeout_s", "--reply-timeout"),
    simulate_: bool = typer.Option(False, "--simulate", help="Run head and tail in the simulator instead, as a "
                                   "split experiment in the run store (lossless LAN link; same injected loss)."),
    node_id: str = typer.Option(HEAD_ID, "--id", help="This head's id (several heads may share one tail)."),
    quant: str = QUANT, bits: int = BITS, elements: int = ELEMENTS, order: str = ORDER, perm_seed: int = PERM_SEED,
    mtu: int = MTU, compress: str = COMPRESS, deadline: float = DEADLINE, reach_rate: Optional[float] = REACH,
    rescale: str = RESCALE, rescale_p: float = RESCALE_P,
    secret_file: Optional[Path] = SECRET_FILE, insecure: bool = INSECURE, key_file: Optional[Path] = KEY_FILE,
    runs_dir: Optional[Path] = RUNS_DIR,
) -> None:
    """Run the head on test samples, send the cut tensors to the tail, print accuracy, bytes and latency (JSON).

    With --simulate the tail runs in this process too (`split serve`'s options go here).
    """
    section = channel(quant, bits, elements, order, perm_seed, mtu, compress, deadline, reach_rate, rescale, rescale_p)
    if not 0.0 <= loss < 1.0:
        raise ConfigError("--loss", f"injected loss must be in [0, 1), got {loss}")
    infer = {"samples": samples, "loss": loss, "burst": burst, "window": window, "reply_timeout_s": reply_timeout}
    if simulate_:
        result = run_study({"name": "split-infer", "seed": seed, "study": "infer", "model": str(model),
                            "channel": section, "infer": infer}, runs_dir)
        print(json.dumps(result), flush=True)
        return
    if key_file is not None:  # a per-head key (`split serve --client-keys`): its id is the head's id
        node_id, secret = client_credential(key_file, None if node_id == HEAD_ID else node_id, "--id")
    else:
        secret = read_secret(secret_file, insecure)
    _infer_over_udp(model, address("--server", server), secret, section, infer, seed, node_id)


def _infer_over_udp(model: Path, addr, secret, section: dict, infer: dict, seed: int, node_id: str) -> None:
    from meshlearn.config import validate_config
    from meshlearn.runtime.aio import AsyncioRuntime
    from meshlearn.split.channel import ChannelSpec

    one_thread()
    spec, settings = validate_config(ChannelSpec, section), validate_config(InferStudy, infer)
    split, meta = load_split_model(model)
    head, _ = build_nodes(split, meta, spec, samples=settings.samples, loss=settings.loss, seed=seed,
                          reply_timeout=settings.reply_timeout_s, window=settings.window, head_id=node_id,
                          run=secrets.randbits(32), burst=settings.burst)
    head.give_up_unheard = True  # a real server that never answers is a setup problem, not 200 misses
    t0 = time.perf_counter()
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(message)s")
    runtime = AsyncioRuntime(peers={TAIL_ID: addr}, secret=secret, seed=seed)
    runtime.add_node(head)
    runtime.run_forever()
    if head.failure is not None:
        raise UsageError(failure_message(head.failure, addr, settings.reply_timeout_s))
    result = {"mode": "udp", "seed": seed, "loss": settings.loss, "burst": settings.burst, **head.summary(),
              "wall_s": round(time.perf_counter() - t0, 2), "predictions": head.predictions().tolist()}
    print(json.dumps(result), flush=True)


_SETTING_FLAGS = {"quant": "--quant", "bits": "--quant/--bits", "order": "--order", "perm_seed": "--perm-seed",
                  "elements_per_packet": "--elements/--mtu", "compress": "--compress"}


def failure_message(failure, addr: tuple[str, int], reply_timeout: float) -> str:
    """The one-line error of a head that gave up (a ``HeadFailure``), with what to do about it."""
    where = f"{addr[0]}:{addr[1]}"
    if failure.reason == "no_reply":
        return (f"no reply from the server at {where} within --reply-timeout {reply_timeout:g} s, not even to say "
                "its channel settings differ; check that `meshlearn split serve` is running there (--server "
                "HOST:PORT), that both sides use the same secret (--secret-file or MESHLEARN_SECRET: the server "
                "drops frames sealed with another key), and that no firewall drops UDP to that port")
    flags = sorted({_SETTING_FLAGS.get(key, "--" + key) for key, _, _ in failure.differences})
    return (f"{failure} at {where}; run `split infer` with the channel options `split serve` was started with"
            + (f" ({', '.join(flags)})" if flags else ""))


@split_app.command("heatmap")
def heatmap_cmd(
    model: Path = MODEL,
    out: Path = typer.Option(..., "--out", help="PNG file to write."),
    sample: int = typer.Option(0, "--sample", help="Index of the test sample."),
    loss: float = typer.Option(0.5, "--loss", help="Injected packet loss for the 'after' panel."),
    seed: int = typer.Option(0, "--seed", help="Seed of the injected loss (same draw as `split infer`)."),
    burst: Optional[float] = BURST,
    scale: int = typer.Option(8, "--scale", help="Pixels per tensor element."),
    quant: str = QUANT, bits: int = BITS, elements: int = ELEMENTS, order: str = ORDER, perm_seed: int = PERM_SEED,
    mtu: int = MTU, compress: str = COMPRESS, rescale: str = RESCALE, rescale_p: float = RESCALE_P,
) -> None:
    """Per-channel heat map of one sample's cut tensor before and after the lossy channel (lost = blue)."""
    from meshlearn.split.channel import encode_packets, reconstruct
    from meshlearn.split.heatmap import render_heatmaps
    from meshlearn.split.nodes import injected_losses

    if not 0.0 <= loss < 1.0:
        raise UsageError(f"--loss must be in [0, 1), got {loss}")
    check_out(out)
    spec = channel_spec(quant, bits, elements, order, perm_seed, mtu, compress, None, None, rescale, rescale_p)
    split, meta = load_split_model(model)
    x, _ = test_samples(meta, sample + 1)
    z = head_fn(split)(x[sample])
    bodies = encode_packets(z, spec, tag=sample)
    dropped = injected_losses(seed, sample, len(bodies), loss, burst)
    after, mask = reconstruct([b for b, lost in zip(bodies, dropped) if not lost], spec, z.shape)
    render_heatmaps(z, after, mask=mask, path=out, scale=scale)
    print(json.dumps({"path": str(out), "sample": sample, "cut_shape": list(z.shape), "packets": len(bodies),
                      "dropped": int(dropped.sum()), "elements_lost_pct": round(100 * (1 - float(mask.mean())), 2)}))


from meshlearn.cli import split_study  # noqa: E402,F401  (tune, curve, search, bandit register on split_app)
