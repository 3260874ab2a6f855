"""`meshlearn split train | serve | infer | heatmap`: split inference between real processes over UDP.

    meshlearn split train --out cnn.safetensors                     # split_cnn on digits, ~10 s
    meshlearn split serve --model cnn.safetensors --listen 0.0.0.0:7100 --secret-file key     # tail (server)
    meshlearn split infer --model cnn.safetensors --server HOST:7100 --loss 0.3 --secret-file key  # head
    meshlearn split infer --model cnn.safetensors --loss 0.3 --simulate   # same nodes, simulated network
    meshlearn split heatmap --model cnn.safetensors --sample 0 --loss 0.5 --out cut.png

Model file: a safetensors file (``meshlearn.wire.save_tensors``) with the SplitModel's state and
its recipe in the metadata (``model``, ``cut``, ``bottleneck``, ``input_shape``, ``num_classes``,
``dataset``, ``data_seed``), so both sides rebuild the same head and tail. ``infer`` reads the
dataset's test split (the model never saw it) and sends its first ``--samples``.

Channel options (``--quant``, ``--elements``, ``--order``, ``--perm-seed``, ``--mtu``,
``--compress``) must match on both sides: every chunk carries a digest of them and the tail drops
(and counts) chunks from a head with other options. ``--deadline``, ``--reach-rate`` and
``--rescale`` are the tail's. ``--loss`` is injected by the head before sending, keyed on
``--seed`` and the sample index, so ``infer --simulate`` with the same seed drops the same packets.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import typer
from meshlearn.cli import app
from meshlearn.cli.deploy import INSECURE, SECRET_FILE, address, check_can_listen, read_secret
from meshlearn.errors import StoreError, UsageError

split_app = typer.Typer(help="Split computing: train, COMtune and search split models; serve the tail and run the "
                        "head over UDP; MWJC link/model bandit.",
                        no_args_is_help=True)
app.add_typer(split_app, name="split")

HEAD_ID, TAIL_ID = "head", "tail"

MODEL = typer.Option(..., "--model", help="Split model file written by `meshlearn split train`.")
QUANT = typer.Option("fp16", "--quant", help="Element encoding: fp32 | fp16 | uniform (min-max, see --bits).")
BITS = typer.Option(8, "--bits", help="Bits per element for --quant uniform.")
ELEMENTS = typer.Option(512, "--elements", help="Elements per packet (0: as many as fit --mtu).")
ORDER = typer.Option("permuted", "--order", help="Element order in packets: permuted | sequential.")
PERM_SEED = typer.Option(0, "--perm-seed", help="Seed of the permuted order (both sides).")
MTU = typer.Option(1500, "--mtu", help="Datagram size incl. IP+UDP header, bytes.")
COMPRESS = typer.Option("none", "--compress", help="Per-packet compression: none | zstd | lz4.")
DEADLINE = typer.Option(0.05, "--deadline", help="Tail: seconds after a sample's first packet to run on what arrived.")
REACH = typer.Option(None, "--reach-rate", help="Tail: run once this fraction of the packets arrived.")
RESCALE = typer.Option("none", "--rescale", help="Tail: none | observed | fixed (1/(1-p) on survivors).")
RESCALE_P = typer.Option(0.0, "--rescale-p", help="p for --rescale fixed.")
BURST = typer.Option(None, "--burst", help="Mean burst length (packets) of the injected loss: a Gilbert model "
                     "with mean loss --loss [default: independent drops].")


def channel_spec(quant: str = "fp16", bits: int = 8, elements: int = 512, order: str = "permuted",
                 perm_seed: int = 0, mtu: int = 1500, compress: str = "none", deadline: float | None = 0.05,
                 reach_rate: float | None = None, rescale: str = "none", rescale_p: float = 0.0):
    """The ChannelSpec the command-line options describe (the same defaults as the options)."""
    from meshlearn.split.channel import ChannelSpec

    return ChannelSpec(quant=quant, bits=bits, elements_per_packet=elements or None, order=order,
                       perm_seed=perm_seed, mtu=mtu, compress=compress, deadline_s=deadline,
                       reach_rate=reach_rate, rescale=rescale, rescale_p=rescale_p)


# ----- model files ------------------------------------------------------------------------


def train_split_model(*, epochs: int = 15, seed: int = 0, cut: str = "relu2", bottleneck: int | None = None,
                      batch_norm: bool = False):
    """``(SplitModel, meta)``: split_cnn (optionally with BatchNorm) trained on digits with Adam, cut after ``cut``."""
    import torch
    from meshlearn.data import load_dataset
    from meshlearn.models import build_model
    from meshlearn.split.model import fit_classifier, split_model

    train_set, test_set = load_dataset("digits", seed=seed)
    x, y = torch.from_numpy(train_set.x), torch.from_numpy(train_set.y)
    model = build_model("split_cnn", train_set.input_shape, train_set.num_classes, seed=seed, batch_norm=batch_norm)
    fit_classifier(model, x, y, epochs=epochs, seed=seed, lr=2e-3)
    split = split_model(model, cut, train_set.input_shape, bottleneck=bottleneck, seed=seed)
    if bottleneck is not None:
        fit_classifier(split, x, y, epochs=max(1, epochs // 2), seed=seed, lr=1e-3)  # the bottleneck starts untrained
    with torch.no_grad():
        acc = float((split(torch.from_numpy(test_set.x)).argmax(1).numpy() == test_set.y).mean())
    meta = dict(model="split_cnn", cut=cut, bottleneck=bottleneck or 0, batch_norm=int(batch_norm), dataset="digits",
                data_seed=seed,
                input_shape=list(train_set.input_shape), num_classes=train_set.num_classes, epochs=epochs,
                test_accuracy_pct=round(100 * acc, 2))
    return split, meta


def save_split_model(path: Path, split, meta: dict[str, Any]) -> Path:
    from meshlearn.wire import save_tensors

    tensors = {k: v.detach().numpy() for k, v in split.state_dict().items()}
    return save_tensors(path, tensors, {"format": "meshlearn.split/1", **meta})


def load_split_model(path: Path):
    """``(SplitModel in eval mode, meta)`` from a file written by :func:`save_split_model`."""
    import torch

    from meshlearn.models import build_model
    from meshlearn.split.model import split_model
    from meshlearn.wire import load_tensors

    if not Path(path).is_file():
        raise UsageError(f"--model {path}: no such file; write one with `meshlearn split train --out {path}`")
    try:
        tensors, meta = load_tensors(path)
    except StoreError as exc:
        raise UsageError(f"--model {path}: {exc}") from None
    if meta.get("format") != "meshlearn.split/1":
        raise UsageError(f"--model {path} is not a split model file; write one with `meshlearn split train --out PATH`")
    shape = tuple(int(d) for d in meta["input_shape"])
    extra = {"batch_norm": True} if int(meta.get("batch_norm", 0)) else {}
    base = build_model(str(meta["model"]), shape, int(meta["num_classes"]), seed=0, **extra)
    split = split_model(base, str(meta["cut"]), shape, bottleneck=int(meta["bottleneck"]) or None)
    try:
        split.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in tensors.items()})
    except RuntimeError as exc:
        raise UsageError(f"--model {path} does not match its recipe: {exc}") from None
    return split.eval(), meta


def test_samples(meta: dict[str, Any], n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` samples of the model's held-out test split."""
    from meshlearn.data import load_dataset

    _, test_set = load_dataset(str(meta["dataset"]), seed=int(meta["data_seed"]))
    if not 0 < n <= len(test_set.y):
        raise UsageError(f"--samples must be in 1..{len(test_set.y)} (the {meta['dataset']} test split), got {n}")
    return test_set.x[:n], test_set.y[:n]


def head_fn(split):
    import torch

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return split.encode(torch.from_numpy(np.asarray(x, np.float32)[None]))[0].numpy()

    return run


def tail_fn(split):
    import torch

    def run(z: np.ndarray) -> int:
        with torch.no_grad():
            return int(split.decode(torch.from_numpy(z[None])).argmax(1)[0])

    return run


def build_nodes(split, meta: dict[str, Any], spec, *, samples: int, loss: float, seed: int,
                reply_timeout: float, window: int, head_id: str = HEAD_ID, run: int = 0,
                burst: float | None = None):
    """``(SplitHead, SplitTail)`` over the model file's test samples (what both commands run)."""
    from meshlearn.split.nodes import SplitHead, SplitTail

    x, y = test_samples(meta, samples)
    head = SplitHead(head_id, TAIL_ID, head_fn(split), x, y, spec, loss=loss, burst=burst, seed=seed,
                     reply_timeout_s=reply_timeout, window=window, run=run)
    return head, SplitTail(TAIL_ID, tail_fn(split), split.cut_shape, spec)


def simulate(head, tail, *, seed: int = 0) -> float:
    """Run head and tail in the simulator on a lossless LAN link; returns the virtual seconds taken."""
    from meshlearn.overlay.simnet import overlay_simulator

    sim = overlay_simulator([head, tail], seed=seed)
    return sim.run()


def check_out(out: Optional[Path]) -> None:
    """An --out path must be in an existing directory (checked before any work is done)."""
    if out is not None and not out.parent.is_dir():
        raise UsageError(f"--out {out}: directory {out.parent} does not exist; create it first")


def _torch_threads() -> None:
    import torch

    torch.set_num_threads(1)  # one sample at a time: more threads only add overhead


def _channel_options(quant, bits, elements, order, perm_seed, mtu, compress, deadline, reach_rate, rescale, rescale_p):
    if deadline <= 0:
        raise UsageError(f"--deadline must be a positive number of seconds, got {deadline}")
    return channel_spec(quant, bits, elements, order, perm_seed, mtu, compress, deadline, reach_rate, rescale,
                        rescale_p)


# ----- commands ---------------------------------------------------------------------------


@split_app.command("train")
def train_cmd(
    out: Path = typer.Option(..., "--out", help="Where to write the model file (safetensors)."),
    epochs: int = typer.Option(15, "--epochs", help="Adam epochs on the digits training split."),
    seed: int = typer.Option(0, "--seed", help="Seed of weights, batch order and the train/test split."),
    cut: str = typer.Option("relu2", "--cut", help="Layer of split_cnn to cut after."),
    bottleneck: Optional[int] = typer.Option(None, "--bottleneck", help="Add a trained bottleneck of this width."),
    batch_norm: bool = typer.Option(False, "--batch-norm/--no-batch-norm", help="BatchNorm after each conv (the "
                                    "COMtune setting: zero-filled losses then hurt the untuned model)."),
) -> None:
    """Train split_cnn on digits and write a model file for `split serve` / `split infer` / `split tune`."""
    if epochs < 1:
        raise UsageError(f"--epochs must be at least 1, got {epochs}")
    check_out(out)
    t0 = time.perf_counter()
    split, meta = train_split_model(epochs=epochs, seed=seed, cut=cut, bottleneck=bottleneck, batch_norm=batch_norm)
    save_split_model(out, split, meta)
    print(json.dumps({**meta, "cut_shape": list(split.cut_shape), "path": str(out),
                      "seconds": round(time.perf_counter() - t0, 1)}), flush=True)


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
    secret_file: Optional[Path] = SECRET_FILE, insecure: bool = INSECURE,
) -> None:
    """Run the tail (status on stderr, results on stdout): rebuild each sample from the packets that arrive by the deadline, reply with the class.

    Prints `serving ... on HOST:PORT` when ready and, on exit (--duration or Ctrl-C), one JSON line
    of counters: samples answered, packets, late/duplicate chunks, chunks with another channel spec,
    and the runtime's rejected datagrams (bad MAC or undecodable).
    """
    from meshlearn.runtime.aio import AsyncioRuntime
    from meshlearn.split.nodes import SplitTail

    addr = address("--listen", listen, listening=True)
    spec = _channel_options(quant, bits, elements, order, perm_seed, mtu, compress, deadline, reach_rate, rescale,
                            rescale_p)
    secret = read_secret(secret_file, insecure)
    check_can_listen(listen, addr)
    _torch_threads()
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
        counters = {**dict(tail.stats), **{k: runtime.stats[k] for k in ("datagrams_rejected", "peer_errors")}}
        print(json.dumps(counters), flush=True)


@split_app.command("infer")
def infer_cmd(
    model: Path = MODEL,
    server: str = typer.Option("127.0.0.1:7100", "--server", help="HOST:PORT of `split serve`."),
    samples: int = typer.Option(200, "--samples", help="How many test samples to infer."),
    loss: float = typer.Option(0.0, "--loss", help="Injected packet loss in [0, 1): the head drops each packet "
                               "with this probability before sending."),
    seed: int = typer.Option(0, "--seed", help="Seed of the injected loss (keyed per sample)."),
    burst: Optional[float] = BURST,
    window: int = typer.Option(1, "--window", help="Samples in flight at once."),
    reply_timeout: float = typer.Option(1.0, "--reply-timeout", help="Seconds to wait for the tail's answer "
                                        "before counting a miss."),
    simulate_: bool = typer.Option(False, "--simulate", help="Run head and tail in the simulator instead "
                                   "(lossless LAN link; same injected loss)."),
    node_id: str = typer.Option(HEAD_ID, "--id", help="This head's id (several heads may share one tail)."),
    quant: str = QUANT, bits: int = BITS, elements: int = ELEMENTS, order: str = ORDER, perm_seed: int = PERM_SEED,
    mtu: int = MTU, compress: str = COMPRESS, deadline: float = DEADLINE, reach_rate: Optional[float] = REACH,
    rescale: str = RESCALE, rescale_p: float = RESCALE_P,
    secret_file: Optional[Path] = SECRET_FILE, insecure: bool = INSECURE,
) -> None:
    """Run the head on test samples, send the cut tensors to the tail, print accuracy, bytes and latency (JSON).

    With --simulate the tail runs in this process too (`split serve`'s options go here).
    """
    spec = _channel_options(quant, bits, elements, order, perm_seed, mtu, compress, deadline, reach_rate, rescale,
                            rescale_p)
    addr = None if simulate_ else address("--server", server)
    secret = None if simulate_ else read_secret(secret_file, insecure)
    _torch_threads()
    split, meta = load_split_model(model)
    head, tail = build_nodes(split, meta, spec, samples=samples, loss=loss, seed=seed, reply_timeout=reply_timeout,
                             window=window, head_id=node_id, run=0 if simulate_ else secrets.randbits(32),
                             burst=burst)
    t0 = time.perf_counter()
    if simulate_:
        simulate(head, tail, seed=seed)
    else:
        from meshlearn.runtime.aio import AsyncioRuntime

        logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(message)s")
        runtime = AsyncioRuntime(peers={TAIL_ID: addr}, secret=secret, seed=seed)
        runtime.add_node(head)
        runtime.run_forever()
    result = {"mode": "simulated" if simulate_ else "udp", "seed": seed, "loss": loss, "burst": burst,
              **head.summary(),
              "wall_s": round(time.perf_counter() - t0, 2), "predictions": head.predictions().tolist()}
    print(json.dumps(result), flush=True)


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
