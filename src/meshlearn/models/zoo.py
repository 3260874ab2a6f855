"""Small reference models (torch ``nn.Module`` factories) and their cost accounting.

A factory is ``(input_shape, num_classes, **params) -> nn.Module`` registered in ``MODELS``.
``build_model`` seeds the weights from an explicit seed inside ``torch.random.fork_rng``,
so building a model never disturbs torch's global RNG. FLOPs are counted, not guessed:
one hooked forward pass over Linear/Conv2d layers (2 FLOPs per multiply-add).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import nn

from meshlearn.errors import UsageError
from meshlearn.registry import Registry, check_params

__all__ = ["MODELS", "build_model", "count_params", "flops_per_sample"]

MODELS: Registry[Callable[..., nn.Module]] = Registry("models")


def _prod(shape: Sequence[int]) -> int:
    out = 1
    for d in shape:
        out *= int(d)
    return out


@MODELS.register("mlp")
def mlp(input_shape: tuple[int, ...], num_classes: int, hidden: Sequence[int] = (64,)) -> nn.Module:
    """Flatten, then Linear+ReLU per entry of ``hidden``, then a Linear classifier."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = _prod(input_shape)
    for h in hidden:
        layers += [nn.Linear(width, int(h)), nn.ReLU()]
        width = int(h)
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


@MODELS.register("cnn")
def cnn(input_shape: tuple[int, ...], num_classes: int, channels: Sequence[int] = (16, 32)) -> nn.Module:
    """Conv3x3(pad 1)+ReLU per entry of ``channels``, each followed by MaxPool2d(2) while the
    spatial size is still >= 4; then Flatten and a Linear classifier. 8x8 → 2x2, 28x28 → 7x7."""
    if len(input_shape) != 3:
        raise UsageError(
            f"cnn needs image input (C, H, W), got input_shape {tuple(input_shape)}; use 'mlp' for tabular data"
        )
    c, h, w = (int(d) for d in input_shape)
    layers: list[nn.Module] = []
    for out in channels:
        layers += [nn.Conv2d(c, int(out), 3, padding=1), nn.ReLU()]
        c = int(out)
        if min(h, w) >= 4:
            layers.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
    layers += [nn.Flatten(), nn.Linear(c * h * w, num_classes)]
    return nn.Sequential(*layers)


def build_model(name: str, input_shape: Sequence[int], num_classes: int, seed: int, **params: Any) -> nn.Module:
    """Build registered model ``name`` with weights drawn from ``seed`` (global RNG untouched)."""
    factory = MODELS.get(name)
    check_params(factory, f"model {name!r}", params, fixed=2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return factory(tuple(int(d) for d in input_shape), int(num_classes), **params)


def count_params(model: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _layer_flops(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> int:
    if isinstance(module, nn.Linear):
        return 2 * module.in_features * module.out_features
    kh, kw = module.kernel_size
    per_output = (module.in_channels // module.groups) * kh * kw
    return 2 * per_output * output[0].numel()


def flops_per_sample(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Forward FLOPs for one sample (Linear and Conv2d multiply-adds x 2; activations ignored).

    Training costs about ``meshlearn.learn.tasks.TRAIN_FLOPS_FACTOR`` (3) times this per sample.
    """
    total = [0]

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        total[0] += _layer_flops(module, inputs, output)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    try:
        with torch.no_grad():
            model(torch.zeros((1, *input_shape)))
    finally:
        for h in handles:
            h.remove()
    return total[0]
