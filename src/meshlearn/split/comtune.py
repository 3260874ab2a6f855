"""COMtune: fine-tune a split model with packet-level dropout at the cut so it tolerates packet loss.

techniques-nishio.md §5 (SI-NR → COMtune). The device sends the cut tensor without retransmission;
the server runs the tail on whatever arrived (lost elements zero-filled). Fine-tuning with dropout
*at the cut* teaches the tail (and optionally the head) to work from a partial tensor.

Rule: the dropout emulates **this channel's** loss exactly, not generic element dropout:

* **packet-level**: the flat cut tensor is grouped into packets with the channel's own plan
  (``channel.packet_plan``: sequential or seeded-permuted element order, ``packet_elements`` per
  packet), each packet is kept with probability 1 - p, and all of a lost packet's elements are
  zeroed — the element mask is the one ``channel.element_mask`` gives for that packet mask;
* **same rescale convention** as the spec (``none``: zero-fill only, the lab framework's choice;
  ``fixed``: survivors ÷ (1 - ``rescale_p``); ``observed``: × n / kept per sample);
* optionally **fake-quantized** first with the spec's scheme (fp16, or ``uniform`` n-bit min-max;
  a torch twin of the numpy ``wire/quant.py`` arithmetic), straight-through gradient.

In eval mode the layer is the identity: the deployed model meets real loss through the channel.

What is tuned (``comtune(..., part=)``): ``"tail"`` (default) freezes the head and fine-tunes only
the server side. The spec's point is that the *receiver* learns to live with partial tensors; a
frozen head means the device keeps its model and its cut tensor unchanged, so one head serves
every tuned variant and the controller of §6 (MWJC) can switch variants on the server alone.
``"all"`` also tunes the head (the paper fine-tunes the whole network); it may spread information
more redundantly over the cut, at the price of re-deploying the device model. The benchmark
(``benchmarks/bench_comtune.py``) reports which one it used and how the other compares.

``loss_curve`` measures accuracy against packet-loss rate through the real vectorized channel
(``channel.simulate_batch`` with Bernoulli packet masks), never through the dropout layer.
"""

from __future__ import annotations

import copy
from typing import Callable, Literal, Sequence

import numpy as np
import torch
from torch import nn

from meshlearn.errors import UsageError
from meshlearn.net.loss import BernoulliLoss
from meshlearn.split.channel import ChannelSpec, packet_plan, simulate_batch
from meshlearn.split.model import SplitModel

__all__ = ["PacketDropout", "packet_of_element", "fake_quantize", "comtune", "loss_curve", "accuracy_under_loss"]


def packet_of_element(n_elements: int, spec: ChannelSpec) -> np.ndarray:
    """``(n_elements,)`` int array: the packet index that carries each flat element under ``spec``."""
    order, per, _ = packet_plan(n_elements, spec)
    out = np.empty(int(n_elements), np.int64)
    out[order] = np.arange(int(n_elements)) // per
    return out


def fake_quantize(z: torch.Tensor, spec: ChannelSpec) -> torch.Tensor:
    """``z`` (N, ...) rounded as the channel's scheme would, straight-through.

    The differentiable torch twin of ``spec.scheme`` (numpy only, on the wire): fp16 is the same
    cast; uniform is the same per-sample min-max in float32 arithmetic, where the wire computes in
    float64 — so values can differ by float32 rounding (tested against the scheme).
    """
    if spec.quant == "fp32":
        return z
    if spec.quant == "fp16":
        q = z.half().float()
    else:
        flat = z.reshape(len(z), -1)
        levels = spec.scheme.levels
        lo = flat.min(dim=1, keepdim=True).values
        scale = (flat.max(dim=1, keepdim=True).values - lo) / levels
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        q = (lo + torch.clamp(torch.round((flat - lo) / scale), 0, levels) * scale).reshape(z.shape)
    return z + (q - z).detach()


class PacketDropout(nn.Module):
    """Dropout of whole packets of the cut tensor, grouped as the channel groups them (see module doc).

    ``cut_shape`` is the per-sample shape; ``quantize=True`` fake-quantizes with ``spec.quant`` before
    dropping. Training mode only; eval mode returns the input unchanged. Masks come from a private,
    seeded torch generator (the global RNG is left alone).
    """

    def __init__(self, cut_shape: Sequence[int], spec: ChannelSpec, p: float, *, quantize: bool = False,
                 seed: int = 0):
        super().__init__()
        if not 0.0 <= float(p) < 1.0:
            raise UsageError(f"dropout rate p must be in [0, 1), got {p}")
        self.cut_shape = tuple(int(d) for d in cut_shape)
        self.spec, self.p, self.quantize = spec, float(p), bool(quantize)
        n = int(np.prod(self.cut_shape, dtype=np.int64))
        _, _, self.packets = packet_plan(n, spec)
        self.register_buffer("packet_index", torch.from_numpy(packet_of_element(n, spec)), persistent=False)
        self.generator = torch.Generator().manual_seed(int(seed))

    def packet_mask(self, n: int) -> torch.Tensor:
        """``(n, packets)`` bool: which packets arrive (each kept with probability 1 - p)."""
        return torch.rand((n, self.packets), generator=self.generator) >= self.p

    def apply_mask(self, z: torch.Tensor, packet_mask: torch.Tensor) -> torch.Tensor:
        """Zero the elements of lost packets and rescale survivors by the spec's convention."""
        flat = z.reshape(len(z), -1)
        keep = packet_mask[:, self.packet_index]
        out = flat * keep.to(flat.dtype)
        if self.spec.rescale == "fixed":
            out = out / (1.0 - self.spec.rescale_p)
        elif self.spec.rescale == "observed":
            kept = keep.sum(dim=1, keepdim=True)
            out = out * torch.where(kept > 0, flat.shape[1] / kept.clamp(min=1), torch.ones_like(kept)).to(out.dtype)
        return out.reshape(z.shape)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return z
        if self.quantize:
            z = fake_quantize(z, self.spec)
        return self.apply_mask(z, self.packet_mask(len(z))) if self.p > 0 else z


def comtune(split: SplitModel, train_data: tuple, p: float, *, epochs: int = 10, lr: float = 1e-3,
            spec: ChannelSpec | None = None, seed: int = 0, part: Literal["tail", "all"] = "tail",
            quantize: bool = False, batch_size: int = 64,
            progress: Callable[[int, int], None] | None = None) -> SplitModel:
    """A copy of ``split`` fine-tuned with :class:`PacketDropout` (rate ``p``) at the cut.

    ``train_data`` is ``(x, y)`` (tensors or arrays); Adam on cross-entropy with the learning rate
    cosine-annealed from ``lr`` to 0 over all steps (steadier end points than a constant rate: the
    70 %-loss accuracy of the benchmark varied by ±1 point between runs without it), seeded
    mini-batch order.
    ``part="tail"`` tunes the tail only (head frozen, kept in eval mode), ``"all"`` both sides.
    ``spec`` (default ``ChannelSpec()``) must be the channel the model will meet: same packetization,
    rescale convention and, with ``quantize=True``, quantizer. The input model is not modified.
    ``progress(epoch, epochs)`` is called after each epoch.
    """
    if part not in ("tail", "all"):
        raise UsageError(f"part must be 'tail' or 'all', got {part!r}")
    if epochs < 0 or not lr > 0:
        raise UsageError(f"need epochs >= 0 and lr > 0, got {epochs}, {lr}")
    spec = spec or ChannelSpec()
    x, y = (torch.as_tensor(np.asarray(a)) for a in train_data)
    tuned = copy.deepcopy(split)
    drop = PacketDropout(tuned.cut_shape, spec, p, quantize=quantize, seed=seed)
    params = list(tuned.tail.parameters()) + (list(tuned.head.parameters()) if part == "all" else [])
    for prm in tuned.head.parameters():
        prm.requires_grad_(part == "all")
    opt = torch.optim.Adam(params, lr=lr)
    steps = epochs * -(-len(x) // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    order_gen = torch.Generator().manual_seed(int(seed))
    for epoch in range(epochs):
        _train_mode(tuned, part)
        drop.train()
        for idx in torch.randperm(len(x), generator=order_gen).split(batch_size):
            opt.zero_grad()
            logits = tuned.decode(drop(tuned.encode(x[idx])))
            nn.functional.cross_entropy(logits, y[idx]).backward()
            opt.step()
            sched.step()
        if progress is not None:
            progress(epoch + 1, epochs)
    for prm in tuned.head.parameters():
        prm.requires_grad_(True)
    return tuned.eval()


def _train_mode(split: SplitModel, part: str) -> None:
    split.train()
    if part == "tail":
        split.head.eval()  # frozen: no batch-norm statistics drift on the device side


def accuracy_under_loss(split: SplitModel, x, y, spec: ChannelSpec, rate: float,
                        rng: np.random.Generator) -> float:
    """Accuracy with every sample's cut tensor sent through ``simulate_batch`` under Bernoulli ``rate``."""
    x = torch.as_tensor(np.asarray(x))
    split.eval()
    with torch.no_grad():
        z = split.encode(x).numpy()
    _, _, packets = packet_plan(split.cut_numel, spec)
    mask = ~BernoulliLoss(rate).sample(len(z) * packets, rng).reshape(len(z), packets)
    z_hat, _ = simulate_batch(z, spec, mask)
    with torch.no_grad():
        pred = split.decode(torch.from_numpy(z_hat)).argmax(1).numpy()
    return float((pred == np.asarray(y)).mean())


def loss_curve(split: SplitModel, test_data: tuple, spec: ChannelSpec, rates: Sequence[float], *,
               repeats: int = 5, seed: int = 0) -> list[tuple[float, float]]:
    """``[(rate, accuracy)]``: mean test accuracy over ``repeats`` Bernoulli packet-loss draws per rate.

    Loss goes through the real channel (quantizer, packet plan, zero-fill, rescale); each rate uses
    its own ``default_rng((seed, i))`` stream, so curves of different models share the loss draws.
    """
    if repeats < 1:
        raise UsageError(f"repeats must be >= 1, got {repeats}")
    x, y = test_data
    out = []
    for i, rate in enumerate(rates):
        rng = np.random.default_rng((int(seed), i))
        acc = np.mean([accuracy_under_loss(split, x, y, spec, float(rate), rng) for _ in range(repeats)])
        out.append((float(rate), float(acc)))
    return out
