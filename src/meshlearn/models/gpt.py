"""A tiny causal GPT over character tokens, laid out as a stack that cuts cleanly at block boundaries.

    tokens (N, T) ─ embed ─▶ h (N, T, d) ─ block1 ─▶ … ─ blockB ─▶ h (N, T, d) ─ head ─▶ logits (N, T, vocab)

:class:`GPT` is an ``nn.Sequential`` with children ``embed``, ``block1`` .. ``blockB`` and ``head``, so
split and swarm code cut it like the zoo's models, and ``model(tokens)`` is the plain full forward.
Blocks are pre-norm (LayerNorm → causal self-attention → residual, LayerNorm → GELU MLP → residual);
the head is a final LayerNorm and a Linear to the vocabulary (not tied to the embedding, so the two
can live in different blocks).

**Incremental decoding.** Every child also has ``forward_step(x, cache=None) -> (y, cache)``: ``x``
holds only the *new* positions, ``cache`` what the child remembers of the earlier ones (``None`` at
the start) and the returned cache covers old and new positions. The embedding remembers how many
positions it has seen (an ``int``), a block its keys and values (:class:`KVCache`), the head nothing
(``None``). Feeding a history in one call or piece by piece gives the same outputs up to float
rounding, so a replacement server rebuilds a lost cache by replaying the history once. Positions stop
at ``context``: nothing slides, going past it raises UsageError.

Weights come from an explicit seed (:func:`build_gpt`, torch's global RNG untouched). The GPT is not
in the zoo's ``MODELS``: those map samples to class scores (``flops_per_sample`` and the FL workspace
feed them float samples), this maps token sequences to per-position logits. :func:`train_lm` is its
one training loop (Adam on next-token cross-entropy over the seeded windows of :func:`lm_batches`).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from meshlearn.errors import UsageError

__all__ = ["GPTConfig", "KVCache", "Embedding", "Block", "Head", "GPT", "build_gpt", "lm_batches", "lm_loss",
           "train_lm"]


@dataclass(frozen=True)
class GPTConfig:
    """Sizes of the tiny GPT (the defaults have about 0.41 M parameters with the 47-character corpus vocabulary)."""

    vocab_size: int  # number of token ids (CharVocab.size)
    n_blocks: int = 8  # transformer blocks, B
    d_model: int = 64  # width of the hidden state
    n_heads: int = 4  # attention heads; d_model must divide by it
    context: int = 64  # most positions one sequence may have
    mlp_ratio: int = 4  # MLP hidden width = mlp_ratio * d_model

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int) or value < 1:
                raise UsageError(f"GPTConfig.{name} must be a positive int, got {value!r}")
        if self.d_model % self.n_heads:
            raise UsageError(f"GPTConfig.d_model ({self.d_model}) must be a multiple of n_heads ({self.n_heads})")

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class KVCache:
    """A block's keys and values for the positions it has seen, each ``(N, n_heads, T, head_dim)``."""

    k: torch.Tensor
    v: torch.Tensor

    @property
    def length(self) -> int:
        return int(self.k.shape[2])


class Embedding(nn.Module):
    """Token plus learned position embedding: ``(N, T)`` ids → ``(N, T, d_model)``."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.context = config.context
        self.tok = nn.Embedding(config.vocab_size, config.d_model)
        self.pos = nn.Embedding(config.context, config.d_model)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.forward_step(idx)[0]

    def forward_step(self, idx: torch.Tensor, cache: int | None = None) -> tuple[torch.Tensor, int]:
        """Embed positions ``cache .. cache + T - 1``; the new cache is the number of positions seen."""
        start = int(cache or 0)
        stop = start + idx.shape[1]
        if stop > self.context:
            raise UsageError(f"a sequence may hold at most {self.context} positions (the context), got {stop}")
        return self.tok(idx) + self.pos(torch.arange(start, stop, device=idx.device)), stop


class Block(nn.Module):
    """One pre-norm transformer block: ``(N, T, d)`` → ``(N, T, d)``."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        d = config.d_model
        self.n_heads = config.n_heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.out = nn.Linear(d, config.mlp_ratio * d), nn.Linear(config.mlp_ratio * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_step(x)[0]

    def forward_step(self, x: torch.Tensor, cache: KVCache | None = None) -> tuple[torch.Tensor, KVCache]:
        """Run the new positions ``x`` after the ones in ``cache``; returns the cache of all of them."""
        attended, cache = self._attend(self.ln1(x), cache)
        x = x + self.proj(attended)
        return x + self.out(F.gelu(self.fc(self.ln2(x)))), cache

    def _attend(self, h: torch.Tensor, cache: KVCache | None) -> tuple[torch.Tensor, KVCache]:
        n, t, d = h.shape
        heads = (z.view(n, t, self.n_heads, d // self.n_heads).transpose(1, 2) for z in self.qkv(h).split(d, 2))
        q, k, v = heads  # (N, nh, T, hs)
        if cache is not None:
            k, v = torch.cat([cache.k, k], 2), torch.cat([cache.v, v], 2)  # (N, nh, past + T, hs)
        total = k.shape[2]
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # (N, nh, T, past + T)
        visible = torch.ones(t, total, dtype=torch.bool, device=h.device).tril(total - t)  # new i sees past + i
        weights = scores.masked_fill(~visible, float("-inf")).softmax(-1)
        return (weights @ v).transpose(1, 2).reshape(n, t, d), KVCache(k, v)


class Head(nn.Module):
    """Final LayerNorm and the Linear to the vocabulary: ``(N, T, d)`` → logits ``(N, T, vocab)``."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln = nn.LayerNorm(config.d_model)
        self.out = nn.Linear(config.d_model, config.vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.ln(x))

    def forward_step(self, x: torch.Tensor, cache: None = None) -> tuple[torch.Tensor, None]:
        return self(x), None


class GPT(nn.Sequential):
    """``embed``, ``block1`` .. ``blockB``, ``head`` in order; ``config`` says how it was built."""

    def __init__(self, config: GPTConfig):
        blocks = [(f"block{i}", Block(config)) for i in range(1, config.n_blocks + 1)]
        super().__init__(OrderedDict([("embed", Embedding(config)), *blocks, ("head", Head(config))]))
        self.config = config
        self.apply(_init_weights)

    def forward_step(self, idx: torch.Tensor, caches: Sequence[Any] | None = None) -> tuple[torch.Tensor, list[Any]]:
        """Logits for the new tokens ``idx`` ``(N, T)`` after those in ``caches`` (one per child)."""
        caches = list(caches) if caches is not None else [None] * len(self)
        x, out = idx, []
        for child, cache in zip(self, caches):
            x, cache = child.forward_step(x, cache)
            out.append(cache)
        return x, out


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


def build_gpt(config: GPTConfig, seed: int) -> GPT:
    """A GPT with weights drawn from ``seed`` (torch's global RNG is left alone)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return GPT(config)


def lm_batches(tokens: np.ndarray, *, steps: int, batch_size: int, context: int,
               seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``steps`` batches of ``batch_size`` random windows: inputs ``(N, context)`` and next tokens, int64.

    The windows depend only on the arguments, so any trainer (single process or a swarm) sees the same batches.
    """
    tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
    if len(tokens) < context + 1:
        raise UsageError(f"training needs at least context + 1 = {context + 1} tokens, got {len(tokens)}")
    rng = np.random.default_rng(np.random.SeedSequence(int(seed)))
    offsets = np.arange(context)
    for _ in range(int(steps)):
        starts = rng.integers(0, len(tokens) - context, size=int(batch_size))[:, None]
        yield tokens[starts + offsets], tokens[starts + offsets + 1]


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of logits ``(N, T, vocab)`` against targets ``(N, T)``."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def train_lm(model: nn.Module, tokens: np.ndarray, *, steps: int, seed: int, batch_size: int = 8,
             lr: float = 3e-3) -> list[float]:
    """Adam on ``lm_loss`` over ``lm_batches(tokens, ...)``; returns the loss of every step, leaves eval mode.

    Deterministic for a seed on one machine (CPU, same thread count): no dropout, seeded windows. On a
    shared box run torch on one thread (``torch.set_num_threads(1)``): 300 steps of the default config take
    about 20 s on one core, where torch's default threads spin against other load and can be 10x slower.
    """
    config = getattr(model, "config", None)
    if not isinstance(config, GPTConfig):
        raise UsageError(f"train_lm trains a GPT (a model with a GPTConfig), got {type(model).__name__}")
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses = []
    for x, y in lm_batches(tokens, steps=steps, batch_size=batch_size, context=config.context, seed=seed):
        opt.zero_grad()
        loss = lm_loss(model(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses
