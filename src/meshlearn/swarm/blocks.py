"""A model cut into B contiguous blocks: the unit swarm servers host, run, store and hand to each other.

Rule: every torch operation of the swarm lives in this module. The other swarm modules (placement,
routing, nodes) deal in block indices and numpy arrays; they never import torch or this module (an
import-linter contract in pyproject.toml) and reach it through tasks that an executor runs.

    boundary 0 ─ block 0 ─▶ boundary 1 ─ block 1 ─▶ … ─ block B-1 ─▶ boundary B (the model's output)

Every stack has a **recipe**, plain JSON data that rebuilds the model's skeleton:

* ``{"model": "gpt", "config": {...}}``: the tiny GPT of :mod:`meshlearn.models.gpt`, one block per
  transformer block. Block 0 also holds the token embedding and block B-1 the final norm and head, so
  the stack maps tokens ``(N, T)`` to logits ``(N, T, vocab)`` and every boundary between two blocks
  carries hidden states ``(N, T, d_model)``.
* ``{"model": "mlp", "input_shape": [...], "num_classes": k, "params": {...}}`` (any zoo model): the
  children of its ``nn.Sequential`` are grouped into B contiguous blocks, as even in count as possible.

``specs[i]`` describes the activation at boundary i. :meth:`BlockStack.check` is the gate where a
peer's activation meets a block: a wrong type, rank, shape or dtype, a NaN or inf, a token id out of
range or a sequence past the context raises ProtocolError (the peer misbehaved: drop, count, route around).

A stack may hold only some blocks (a server's span). :meth:`BlockStack.load` reads just those blocks'
tensors from one model file; :meth:`~BlockStack.export_block` / :meth:`~BlockStack.import_block` move one
block's weights to or from a peer as numpy arrays, and :meth:`~BlockStack.digest` tells whether two
holders have the same weights. The model file is safetensors (:func:`meshlearn.wire.save_tensors`):
tensor ``blocks.{i}.{key}`` is entry ``key`` of block i's state dict; the meta holds ``format``
(``meshlearn.swarm/1``), ``recipe`` and ``groups`` (children per block).

Generation (GPT stacks): :meth:`~BlockStack.step` runs block i on the new positions only, with a
:class:`BlockCache` of what it saw before; a replacement server rebuilds a lost cache with one ``step``
over the block's input history. Runs keep the caller's grad mode (wrap inference in ``torch.no_grad()``).
:class:`SpanWorkspace` runs a server's :class:`~meshlearn.swarm.tasks.StepTask` s: the caches come in
with the task as plain numpy data and go back in the result (the server node keeps them; the workspace
holds no session state). :func:`generate_local` is the single-process reference of swarm generation.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from meshlearn.errors import ProtocolError, StoreError, UsageError
from meshlearn.learn.params import mismatches
from meshlearn.learn.torchio import set_params, state_to_numpy
from meshlearn.models.gpt import GPT, GPTConfig, KVCache, build_gpt
from meshlearn.models.zoo import build_model
from meshlearn.swarm.modelfile import FORMAT, read_header
from meshlearn.swarm.tasks import CachedBlock, LoadSpan, SpanResult, StepResult, StepTask
from meshlearn.wire.files import load_tensors, save_tensors

__all__ = ["FORMAT", "ActivationSpec", "BlockCache", "BlockStack", "SpanWorkspace", "generate_local"]



@dataclass(frozen=True)
class ActivationSpec:
    """The activation at one boundary, per sample: ``shape`` (``None`` marks the sequence axis, of
    length 1..``max_len``) and ``dtype``; ``vocab > 0`` marks token ids, which must lie in 0..vocab-1."""

    shape: tuple[int | None, ...]
    dtype: str
    max_len: int = 0
    vocab: int = 0

    def describe(self) -> str:
        dims = ", ".join(f"T<={self.max_len}" if d is None else str(d) for d in self.shape)
        return f"(N, {dims}) {self.dtype}" + (f" ids < {self.vocab}" if self.vocab else "")

    def problem(self, x: Any, past: int = 0) -> str | None:
        """Why batch ``x`` (after ``past`` cached positions) does not fit, or None."""
        if not isinstance(x, (torch.Tensor, np.ndarray)):
            return f"got a {type(x).__name__}, not a tensor"
        dtype = str(x.dtype).removeprefix("torch.")
        if dtype != self.dtype:
            return f"got dtype {dtype}"
        return self._shape_problem(tuple(x.shape), past) or self._value_problem(x)

    def _shape_problem(self, shape: tuple[int, ...], past: int) -> str | None:
        fits = len(shape) == len(self.shape) + 1 and shape[0] >= 1
        fits = fits and all(s >= 1 if d is None else s == d for s, d in zip(shape[1:], self.shape))
        if not fits:
            return f"got shape {shape}"
        new = shape[1 + self.shape.index(None)] if None in self.shape else 0
        if past + new > self.max_len:
            return f"{past} cached + {new} new positions exceed the context {self.max_len}"
        return None

    def _value_problem(self, x: torch.Tensor | np.ndarray) -> str | None:
        lib = np if isinstance(x, np.ndarray) else torch
        if self.vocab and (lib.any(x < 0) or lib.any(x >= self.vocab)):
            return f"token ids outside 0..{self.vocab - 1}"
        if not self.vocab and not bool(lib.all(lib.isfinite(x))):
            return "NaN or inf values"
        return None


@dataclass(frozen=True)
class BlockCache:
    """What block ``block`` remembers of ``length`` positions of ``batch`` sequences (``states``: one
    opaque entry per layer of the block, e.g. attention keys and values)."""

    block: int
    batch: int
    length: int
    states: tuple[Any, ...]


class BlockStack:
    """B blocks of one model, of which this stack holds some (``held``); see the module docstring."""

    def __init__(self, recipe: dict[str, Any], groups: Sequence[int], blocks: dict[int, nn.Module]):
        self.recipe = copy.deepcopy(recipe)
        self.groups = tuple(int(g) for g in groups)
        self._skeleton = _group(_skeleton(self.recipe), self.groups)  # fresh layers: shapes, keys, new blocks
        self.specs = _specs(self.recipe, self._skeleton)
        self._blocks = dict(blocks)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_gpt(cls, model: GPT) -> BlockStack:
        """The B transformer blocks of ``model`` as B blocks (sharing its layers, no copy)."""
        if not isinstance(model, GPT):
            raise UsageError(f"from_gpt needs a meshlearn.models.gpt.GPT, got {type(model).__name__}")
        recipe = {"model": "gpt", "config": model.config.to_dict()}
        return cls._wrap(model, recipe, _gpt_groups(model.config.n_blocks))

    @classmethod
    def from_zoo(cls, model: nn.Module, name: str, input_shape: Sequence[int], num_classes: int, *,
                 num_blocks: int, **params: Any) -> BlockStack:
        """Zoo model ``model`` (built as ``build_model(name, input_shape, num_classes, seed, **params)``)
        cut into ``num_blocks`` blocks of consecutive children (sharing its layers, no copy)."""
        if not isinstance(model, nn.Sequential):
            raise UsageError(f"from_zoo cuts an nn.Sequential (a zoo model), got {type(model).__name__}")
        recipe = {"model": name, "input_shape": [int(d) for d in input_shape], "num_classes": int(num_classes),
                  "params": params}
        return cls._wrap(model, recipe, _even_groups(len(model), num_blocks))

    @classmethod
    def _wrap(cls, model: nn.Module, recipe: dict[str, Any], groups: tuple[int, ...]) -> BlockStack:
        stack, blocks = cls(recipe, groups, {}), _group(model, groups)
        expected = {k: tuple(v.shape) for k, v in nn.Sequential(*stack._skeleton).state_dict().items()}
        problems = mismatches(expected, {k: v.detach().numpy() for k, v in nn.Sequential(*blocks).state_dict().items()})
        if problems:
            raise UsageError(f"the model does not match its recipe {recipe}: {'; '.join(problems[:3])}")
        stack._blocks = dict(enumerate(blocks))
        return stack

    @classmethod
    def load(cls, path: str | Path, start: int = 0, stop: int | None = None) -> BlockStack:
        """Blocks ``start .. stop - 1`` (default: all) from a model file written by :meth:`save`; only their
        tensors are read."""
        meta = read_header(path).meta
        stack = cls(meta["recipe"], meta["groups"], {})
        span = stack._span(start, stop)
        names = [f"blocks.{i}.{key}" for i in span for key in stack._skeleton[i].state_dict()]
        tensors, _ = load_tensors(path, names)
        for i in span:
            prefix = f"blocks.{i}."
            try:
                stack.import_block(i, {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
            except ProtocolError as exc:
                raise StoreError(f"model file {path}: {exc}") from None
        return stack

    def save(self, path: str | Path) -> Path:
        """Write every block to one safetensors file (atomically); the stack must hold all blocks."""
        missing = [i for i in range(self.num_blocks) if i not in self._blocks]
        if missing:
            raise UsageError(f"save needs all {self.num_blocks} blocks, this stack lacks {missing}")
        tensors = {f"blocks.{i}.{k}": v for i in range(self.num_blocks) for k, v in self.export_block(i).items()}
        meta = {"format": FORMAT, "recipe": self.recipe, "groups": list(self.groups),
                "digests": [self.digest(i) for i in range(self.num_blocks)]}
        return save_tensors(Path(path), tensors, meta)

    # ------------------------------------------------------------------ what is held
    @property
    def num_blocks(self) -> int:
        return len(self.groups)

    @property
    def held(self) -> tuple[int, ...]:
        """Indices of the blocks this stack holds, ascending."""
        return tuple(sorted(self._blocks))

    def block(self, i: int) -> nn.Module:
        """Block ``i``'s module (an ``nn.Sequential`` of the model's layers)."""
        self._index(i, self.num_blocks - 1)
        if i not in self._blocks:
            raise UsageError(f"block {i} is not held here (held: {list(self.held) or 'none'}); load or import it")
        return self._blocks[i]

    def drop(self, i: int) -> None:
        """Forget block ``i`` (a server moving to another span)."""
        self.block(i)
        del self._blocks[i]

    def nbytes(self, i: int) -> int:
        """Bytes of block ``i``'s weights, known whether or not it is held."""
        self._index(i, self.num_blocks - 1)
        return sum(t.numel() * t.element_size() for t in self._skeleton[i].state_dict().values())

    # ------------------------------------------------------------------ running
    def check(self, i: int, x: Any, past: int = 0) -> None:
        """Raise ProtocolError unless ``x`` fits boundary ``i`` (``B``: the model's output)."""
        self._index(i, self.num_blocks)
        problem = self.specs[i].problem(x, past)
        if problem:
            where = f"input of block {i}" if i < self.num_blocks else "model output"
            raise ProtocolError(f"activation rejected as {where}: {problem}; expected {self.specs[i].describe()}")

    def run(self, i: int, x: Any) -> torch.Tensor:
        """Block ``i`` on a full batch ``x`` (torch tensor or numpy array), after :meth:`check`."""
        module = self.block(i)
        self.check(i, x)
        return module(_tensor(x))

    def run_span(self, start: int, stop: int, x: Any) -> torch.Tensor:
        """Blocks ``start .. stop - 1`` in order; ``x`` is checked once, at boundary ``start``."""
        modules = [self.block(i) for i in self._span(start, stop)]
        self.check(start, x)
        y = _tensor(x)
        for module in modules:
            y = module(y)
        return y

    def step(self, i: int, x: Any, cache: BlockCache | None = None) -> tuple[torch.Tensor, BlockCache]:
        """Block ``i`` on the new positions ``x`` ``(N, T_new, ...)`` after those in ``cache``; returns the
        output for the new positions and the cache of all of them. ``cache=None`` with the whole input
        history rebuilds a cache (what a replacement server does)."""
        module = self.block(i)
        if self.specs[i].max_len == 0:
            raise UsageError(f"step needs a sequence model (a GPT stack), not {self.recipe['model']!r}; use run")
        past = self._past(i, x, cache)
        y, states = _tensor(x), cache.states if cache is not None else (None,) * len(module)
        new = []
        for layer, state in zip(module, states):
            y, state = layer.forward_step(y, state)
            new.append(state)
        return y, BlockCache(i, int(y.shape[0]), past + int(x.shape[1]), tuple(new))

    def _past(self, i: int, x: Any, cache: BlockCache | None) -> int:
        if cache is not None and cache.block != i:
            raise UsageError(f"the cache belongs to block {cache.block}, not block {i}")
        past = 0 if cache is None else cache.length
        self.check(i, x, past)
        if cache is not None and x.shape[0] != cache.batch:
            raise ProtocolError(f"activation rejected as input of block {i}: a batch of {x.shape[0]} sequences, "
                                f"the cache holds {cache.batch}")
        return past

    # ------------------------------------------------------------------ weights between peers
    def export_block(self, i: int) -> dict[str, np.ndarray]:
        """Copies of block ``i``'s weights, keyed as in its state dict (what a peer sends)."""
        return state_to_numpy(self.block(i))

    def import_block(self, i: int, tensors: dict[str, np.ndarray]) -> None:
        """Hold block ``i`` with ``tensors`` (from :meth:`export_block` of a peer); ProtocolError if a key,
        shape or dtype is wrong or a value is NaN/inf, and then nothing changes."""
        self._index(i, self.num_blocks - 1)
        module = self._blocks.get(i)
        fresh = module is None
        if fresh:
            module = copy.deepcopy(self._skeleton[i])
        _check_weights(i, module, tensors)
        set_params(module, tensors)
        if fresh:
            self._blocks[i] = module.eval()

    def digest(self, i: int) -> str:
        """SHA-256 over block ``i``'s weights (names, dtypes, shapes, bytes): equal digests, equal weights."""
        h = hashlib.sha256()
        for key, arr in sorted(self.export_block(i).items()):
            h.update(f"{key}|{arr.dtype.str}|{arr.shape}|".encode())
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()

    # ------------------------------------------------------------------ indices
    def _index(self, i: int, last: int) -> None:
        if not isinstance(i, (int, np.integer)) or not 0 <= i <= last:
            raise UsageError(f"block index must be an int in 0..{last}, got {i!r}")

    def _span(self, start: int, stop: int | None) -> range:
        stop = self.num_blocks if stop is None else stop
        if not (isinstance(start, int) and isinstance(stop, int) and 0 <= start < stop <= self.num_blocks):
            raise UsageError(f"a span needs 0 <= start < stop <= {self.num_blocks}, got start={start!r}, stop={stop!r}")
        return range(start, stop)


class SpanWorkspace:
    """The executor workspace of swarm servers: runs :class:`~meshlearn.swarm.tasks.SpanTask` s on a stack.

    ``run`` returns a SpanResult: the output activation as a numpy array, or the reason the input is not
    a valid activation at the task's boundary (the peer that sent it misbehaved).
    ``flops_per_block`` sets the simulated compute of one block for one sample (0: instantaneous).
    ``model``: the model file a :class:`~meshlearn.swarm.tasks.LoadSpan` reads blocks from (a server
    process); without it the stack must already hold the span (the simulator's holds every block)."""

    def __init__(self, stack: BlockStack, flops_per_block: float = 0.0, model: str | Path | None = None):
        self.stack, self.flops_per_block, self.model = stack, flops_per_block, model

    def run(self, task: Any) -> SpanResult | StepResult | None:
        if isinstance(task, StepTask):
            return self.step(task)
        if isinstance(task, LoadSpan):
            return self.load(task)
        gone = self._not_held(task)
        if gone:
            return SpanResult(None, gone)
        try:
            with torch.no_grad():
                return SpanResult(self.stack.run_span(task.start, task.end, task.x).numpy())
        except ProtocolError as exc:
            return SpanResult(None, str(exc))

    def _not_held(self, task: Any) -> str | None:
        """Why a request for blocks the stack no longer holds is refused (its server moved to another span
        while the request waited; the node still announced the old one): the client routes around it."""
        missing = [i for i in range(task.start, task.end) if i not in self.stack.held]
        return f"blocks {missing} are no longer held here (this server moved to another span)" if missing else None

    def load(self, task: LoadSpan) -> tuple[str, ...]:
        """Hold blocks ``[start, end)``: read the missing ones from ``model``; with a model file, drop the rest.
        Returns the digests of the span's blocks as held (what the server announces)."""
        span = self.stack._span(task.start, task.end)
        missing = [i for i in span if i not in self.stack.held]
        if missing and self.model is None:
            raise UsageError(f"blocks {missing} are not held and this workspace has no model file to load them from")
        if missing:
            fresh = BlockStack.load(self.model, missing[0], missing[-1] + 1)
            for i in missing:
                self.stack.import_block(i, fresh.export_block(i))
        if self.model is not None:
            for i in [i for i in self.stack.held if i not in span]:
                self.stack.drop(i)
        return tuple(self.stack.digest(i) for i in span)

    def step(self, task: StepTask) -> StepResult:
        """One generation step of blocks ``[start, end)`` with the caches the task carries (see tasks.py)."""
        if len(task.caches) != task.end - task.start:
            raise UsageError(f"a step over blocks [{task.start}, {task.end}) needs one cache entry per block, "
                             f"got {len(task.caches)}")
        gone = self._not_held(task)
        if gone:
            return StepResult(None, (), gone)
        y, out = task.x, []
        try:
            with torch.no_grad():
                for i, plain in zip(range(task.start, task.end), task.caches):
                    y, cache = self.stack.step(i, y, _from_plain(i, plain))
                    out.append(_to_plain(cache))
        except ProtocolError as exc:
            return StepResult(None, (), str(exc))
        return StepResult(y.numpy(), tuple(out))

    def span_flops(self, start: int, end: int, x: np.ndarray) -> float:
        return self.flops_per_block * (end - start) * (len(x) if np.ndim(x) else 1)

    def step_flops(self, start: int, end: int, x: np.ndarray) -> float:
        """A step's share of a full-sequence run: the new positions over the context."""
        context = self.stack.specs[start].max_len or 1
        positions = x.shape[1] if np.ndim(x) > 1 else 1
        return self.span_flops(start, end, x) * positions / context


def generate_local(stack: BlockStack, tokens: np.ndarray, n: int,
                   pick: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``n`` tokens after ``tokens`` ``(N, T)`` on one stack holding every block: the single-process reference
    of swarm generation (``pick`` maps last-position logits ``(N, vocab)`` to the next ids ``(N,)``)."""
    caches: list[BlockCache | None] = [None] * stack.num_blocks
    x, out = np.asarray(tokens, dtype=np.int64), []
    with torch.no_grad():
        for _ in range(n):
            y = x
            for i in range(stack.num_blocks):
                y, caches[i] = stack.step(i, y, caches[i])
            out.append(np.asarray(pick(y[:, -1].numpy()), dtype=np.int64))
            x = out[-1][:, None]
    return np.stack(out, 1) if out else np.zeros((len(x), 0), np.int64)


def _to_plain(cache: BlockCache) -> CachedBlock:
    states = tuple((s.k.numpy(), s.v.numpy()) if isinstance(s, KVCache) else s for s in cache.states)
    return CachedBlock(cache.length, cache.batch, states)


def _from_plain(i: int, plain: CachedBlock | None) -> BlockCache | None:
    if plain is None:
        return None
    states = tuple(KVCache(_tensor(s[0]), _tensor(s[1])) if isinstance(s, tuple) else s for s in plain.states)
    return BlockCache(i, plain.batch, plain.length, states)


# ---------------------------------------------------------------------- skeletons and specs
def _skeleton(recipe: dict[str, Any]) -> nn.Sequential:
    """The model a recipe describes, with seed-0 weights that only serve as a template (the models are
    small; the meta device would save the memory but its first use costs seconds)."""
    try:
        if recipe["model"] == "gpt":
            return build_gpt(GPTConfig(**recipe["config"]), seed=0)
        return build_model(recipe["model"], recipe["input_shape"], recipe["num_classes"], 0,
                           **recipe.get("params", {}))
    except (KeyError, TypeError) as exc:
        raise UsageError(f"bad swarm model recipe {recipe!r:.200}: {exc!r}") from None


def _gpt_groups(n_blocks: int) -> tuple[int, ...]:
    """Children per block for a GPT: the embedding joins the first block, the head the last."""
    return (3,) if n_blocks == 1 else (2, *([1] * (n_blocks - 2)), 2)


def _even_groups(children: int, num_blocks: int) -> tuple[int, ...]:
    if not isinstance(num_blocks, int) or not 1 <= num_blocks <= children:
        raise UsageError(f"num_blocks must be in 1..{children} (the model's layers), got {num_blocks!r}")
    base, extra = divmod(children, num_blocks)
    return tuple(base + (1 if b < extra else 0) for b in range(num_blocks))


def _group(model: nn.Module, groups: tuple[int, ...]) -> list[nn.Sequential]:
    children = list(model.children())
    if not isinstance(model, nn.Sequential) or sum(groups) != len(children) or min(groups, default=0) < 1:
        raise UsageError(f"groups {groups} do not cut a sequential model of {len(children)} layers")
    bounds = np.cumsum((0, *groups))
    return [nn.Sequential(*children[a:b]) for a, b in itertools.pairwise(bounds)]


def _specs(recipe: dict[str, Any], skeleton: list[nn.Sequential]) -> tuple[ActivationSpec, ...]:
    if recipe["model"] == "gpt":
        return _gpt_specs(GPTConfig(**recipe["config"]), len(skeleton))
    x = torch.zeros((1, *recipe["input_shape"]))
    specs = [ActivationSpec(tuple(x.shape[1:]), "float32")]
    with torch.no_grad():
        for module in skeleton:
            x = module(x)
            specs.append(ActivationSpec(tuple(x.shape[1:]), str(x.dtype).removeprefix("torch.")))
    return tuple(specs)


def _gpt_specs(config: GPTConfig, num_blocks: int) -> tuple[ActivationSpec, ...]:
    if num_blocks != config.n_blocks:
        raise UsageError(f"a GPT stack has one block per transformer block ({config.n_blocks}), got {num_blocks}")
    tokens = ActivationSpec((None,), "int64", config.context, config.vocab_size)
    hidden = ActivationSpec((None, config.d_model), "float32", config.context)
    logits = ActivationSpec((None, config.vocab_size), "float32", config.context)
    return (tokens, *([hidden] * (num_blocks - 1)), logits)


def _check_weights(i: int, module: nn.Module, tensors: Any) -> None:
    if not isinstance(tensors, dict):
        raise ProtocolError(f"weights of block {i} must be a dict of arrays, got {type(tensors).__name__}")
    state = module.state_dict()
    problems = mismatches({k: tuple(v.shape) for k, v in state.items()}, tensors)
    for key, arr in tensors.items():
        want = str(state[key].dtype).removeprefix("torch.") if key in state else None
        if want is not None and (not isinstance(arr, np.ndarray) or arr.dtype.name != want):
            problems.append(f"{key} has dtype {getattr(arr, 'dtype', type(arr).__name__)}, expected {want}")
        elif want is not None and arr.dtype.kind == "f" and not np.isfinite(arr).all():
            problems.append(f"{key} holds NaN or inf")
    if problems:
        raise ProtocolError(f"weights of block {i} rejected: {'; '.join(problems[:5])}")


def _tensor(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    return torch.from_numpy(x if x.flags.writeable and x.flags.c_contiguous else np.array(x, order="C"))
