"""Cutting a model into a head (device) and a tail (server), with an optional bottleneck.

Rule: every split of a torch model happens here. A model is split *after* a named child of an
``nn.Sequential`` (the zoo's ``mlp``/``cnn`` and ``split_cnn`` below all are one); the head
holds children ``[0 .. cut]``, the tail the rest, and ``tail(head(x)) == model(x)`` exactly.
Head and tail hold *copies* of the layers: splitting never touches the original model.

The tensor that crosses the network (the "cut tensor") has a per-sample shape that is fixed at
construction and checked on both sides (``SplitModel.encode`` / ``decode``)::

    x (N, *input_shape) ─ head ─▶ [encoder] ─▶ z (N, *cut_shape)  ══ channel ══▶ [decoder] ─ tail ─▶ logits

An optional trainable **bottleneck** shrinks the cut: for an image tensor (C, H, W) the encoder
is a 1x1 conv C→k + ReLU on the device and the decoder a 3x3 conv k→C + ReLU on the server, so
``cut_shape = (k, H, W)``; for a flat tensor (D,) they are Linear D→k + ReLU and k→D + ReLU.
The ReLUs keep the wire tensor non-negative, so int/n-bit quantization represents 0 exactly and a
zero-filled lost element reads as "no activation". The bottleneck starts untrained: fine-tune
the split model (e.g. a few epochs end to end) before measuring accuracy.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from meshlearn.errors import UsageError
from meshlearn.models.zoo import MODELS, flops_per_sample

__all__ = ["SplitPoint", "SplitModel", "split_points", "split_model", "split_cnn", "make_bottleneck",
           "fit_classifier"]


@dataclass(frozen=True)
class SplitPoint:
    """One place a model can be cut: after child ``name`` (position ``index``, class ``layer``).

    ``shape`` is the per-sample shape of the tensor crossing the cut and ``numel`` its element
    count; ``head_flops`` / ``tail_flops`` are the forward FLOPs per sample on each side.
    """

    name: str
    index: int
    layer: str
    shape: tuple[int, ...]
    numel: int
    head_flops: int
    tail_flops: int


def _children(model: nn.Module) -> list[tuple[str, nn.Module]]:
    if not isinstance(model, nn.Sequential):
        raise UsageError(
            f"split needs an nn.Sequential (children run in order), got {type(model).__name__}; "
            "wrap the layers in nn.Sequential(OrderedDict(name=layer, ...))"
        )
    children = list(model.named_children())
    if len(children) < 2:
        raise UsageError(f"a model with {len(children)} layer(s) has no place to cut; it needs at least 2")
    return children


def _numel(shape: Sequence[int]) -> int:
    out = 1
    for d in shape:
        out *= int(d)
    return out


def _shape_after(module: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, ...]:
    with torch.no_grad():
        return tuple(module(torch.zeros((1, *input_shape))).shape[1:])


def split_points(model: nn.Module, input_shape: Sequence[int]) -> list[SplitPoint]:
    """Every valid cut of ``model`` for samples of ``input_shape`` (after each child but the last)."""
    children = _children(model)
    shape = tuple(int(d) for d in input_shape)
    per_layer: list[tuple[str, str, tuple[int, ...], int]] = []
    for name, layer in children:
        flops = flops_per_sample(layer, shape)
        shape = _shape_after(layer, shape)
        per_layer.append((name, type(layer).__name__, shape, flops))
    total = sum(f for *_, f in per_layer)
    points, head = [], 0
    for index, (name, kind, out_shape, flops) in enumerate(per_layer[:-1]):
        head += flops
        points.append(SplitPoint(name, index, kind, out_shape, _numel(out_shape), head, total - head))
    return points


def _cut_index(model: nn.Module, after: str) -> int:
    names = [name for name, _ in _children(model)][:-1]
    if after not in names:
        raise UsageError(f"cannot split after layer {after!r}: valid cut points are {', '.join(names)}")
    return names.index(after)


def make_bottleneck(shape: Sequence[int], k: int) -> tuple[nn.Module, nn.Module]:
    """``(encoder, decoder)`` that squeeze a cut tensor of per-sample ``shape`` to width ``k``.

    Image tensors (C, H, W): 1x1 conv C→k + ReLU, then 3x3 conv k→C + ReLU. Flat (D,): Linear.
    """
    shape = tuple(int(d) for d in shape)
    if len(shape) not in (1, 3):
        raise UsageError(f"a bottleneck needs a cut tensor of shape (C, H, W) or (D,), got {shape}")
    width = shape[0]
    if not 1 <= int(k) <= width:
        raise UsageError(f"bottleneck width must be in 1..{width} (the cut's channels/width), got {k}")
    k = int(k)
    if len(shape) == 3:
        encoder = nn.Sequential(nn.Conv2d(width, k, 1), nn.ReLU())
        decoder = nn.Sequential(nn.Conv2d(k, width, 3, padding=1), nn.ReLU())
    else:
        encoder = nn.Sequential(nn.Linear(width, k), nn.ReLU())
        decoder = nn.Sequential(nn.Linear(k, width), nn.ReLU())
    return encoder, decoder


class SplitModel(nn.Module):
    """``head`` (device side, encoder included) and ``tail`` (server side, decoder included).

    ``forward(x) == decode(encode(x))``; without a bottleneck it equals the original model.
    ``cut_shape`` is the per-sample shape on the wire, ``cut_numel`` its element count,
    ``head_flops`` / ``tail_flops`` the forward FLOPs per sample on each side.
    """

    def __init__(self, head: nn.Sequential, tail: nn.Sequential, input_shape: Sequence[int], after: str,
                 bottleneck: int | None = None):
        super().__init__()
        self.head, self.tail = head, tail
        self.after, self.bottleneck = after, bottleneck
        self.input_shape = tuple(int(d) for d in input_shape)
        self.cut_shape = _shape_after(head, self.input_shape)
        self.cut_numel = _numel(self.cut_shape)
        self.head_flops = flops_per_sample(head, self.input_shape)
        self.tail_flops = flops_per_sample(tail, self.cut_shape)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Device side: ``(N, *input_shape)`` → cut tensor ``(N, *cut_shape)``."""
        _check_shape("head input", x, self.input_shape)
        return self.head(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Server side: cut tensor ``(N, *cut_shape)`` (possibly damaged by the channel) → output."""
        _check_shape("cut tensor", z, self.cut_shape)
        return self.tail(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def _check_shape(what: str, t: torch.Tensor, shape: tuple[int, ...]) -> None:
    if tuple(t.shape[1:]) != shape:
        raise UsageError(f"{what} must have shape (N, {', '.join(map(str, shape))}), got {tuple(t.shape)}")


def split_model(model: nn.Module, after: str, input_shape: Sequence[int], *, bottleneck: int | None = None,
                seed: int = 0) -> SplitModel:
    """Cut ``model`` after child ``after``; with ``bottleneck=k`` add an encoder/decoder of width k.

    The bottleneck's weights are drawn from ``seed`` (torch's global RNG is left alone).
    """
    children = _children(model)
    cut = _cut_index(model, after)
    head_layers = OrderedDict((n, copy.deepcopy(m)) for n, m in children[: cut + 1])
    tail_layers = OrderedDict((n, copy.deepcopy(m)) for n, m in children[cut + 1 :])
    if bottleneck is not None:
        shape = _shape_after(nn.Sequential(head_layers), tuple(int(d) for d in input_shape))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            encoder, decoder = make_bottleneck(shape, bottleneck)
        head_layers["encoder"] = encoder
        tail_layers = OrderedDict([("decoder", decoder), *tail_layers.items()])
    return SplitModel(nn.Sequential(head_layers), nn.Sequential(tail_layers), input_shape, after, bottleneck)


@MODELS.register("split_cnn")
def split_cnn(input_shape: tuple[int, ...], num_classes: int, channels: Sequence[int] = (32, 32, 64),
              hidden: int = 64, batch_norm: bool = False) -> nn.Sequential:
    """A CNN with named layers sized for split experiments on digits (8x8) and MNIST (28x28).

    ``conv{i}`` (3x3, pad 1) + ``relu{i}`` per channel count; a ``pool{i}`` (MaxPool 2) follows
    every conv but the first while the side is >= 4; then ``flatten``, ``fc`` (→ hidden),
    ``relu_fc`` and ``out``. ``batch_norm=True`` puts a ``bn{i}`` (BatchNorm2d) between each conv and
    its ReLU, like the VGG-style network the COMtune paper ships (techniques-nishio.md §5). With the defaults on 1x8x8 the cut after ``relu2`` carries
    32x8x8 = 2,048 elements (on 1x28x28, after ``pool2``: 32x14x14 = 6,272, like COMtune's 7x7x128).
    """
    if len(input_shape) != 3:
        raise UsageError(f"split_cnn needs image input (C, H, W), got input_shape {tuple(input_shape)}")
    if not channels:
        raise UsageError("split_cnn needs at least one entry in channels")
    c, h, w = (int(d) for d in input_shape)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for i, out in enumerate(channels, start=1):
        layers[f"conv{i}"] = nn.Conv2d(c, int(out), 3, padding=1)
        if batch_norm:
            layers[f"bn{i}"] = nn.BatchNorm2d(int(out))
        layers[f"relu{i}"] = nn.ReLU()
        c = int(out)
        if i > 1 and min(h, w) >= 4:
            layers[f"pool{i}"] = nn.MaxPool2d(2)
            h, w = h // 2, w // 2
    layers["flatten"] = nn.Flatten()
    layers["fc"] = nn.Linear(c * h * w, int(hidden))
    layers["relu_fc"] = nn.ReLU()
    layers["out"] = nn.Linear(int(hidden), num_classes)
    return nn.Sequential(layers)


def fit_classifier(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, seed: int,
                   lr: float = 2e-3, batch_size: int = 64,
                   progress: Callable[[int, int], None] | None = None) -> nn.Module:
    """Plain Adam on cross-entropy in seeded mini-batches; leaves ``model`` in eval mode.

    The one training loop of the split experiments (benchmarks, ``meshlearn split train``, NASC);
    ``progress(epoch, epochs)`` after every epoch."""
    gen = torch.Generator().manual_seed(int(seed))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for epoch in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(batch_size):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        if progress is not None:
            progress(epoch + 1, epochs)
    return model.eval()
