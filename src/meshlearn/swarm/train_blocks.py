"""The torch side of swarm training: each server's blocks, their optimizers, kept graphs and staged gradients.

Rule: this module and :mod:`meshlearn.swarm.blocks` are the only swarm modules that touch torch (the
import-linter contract in pyproject.toml); the nodes (:mod:`meshlearn.swarm.training`) reach it through
the tasks of :mod:`meshlearn.swarm.train_tasks`, which an executor runs on a :class:`TrainWorkspace`.

Per server (``ServerState``), for the one ``(step, attempt)`` it is working on:

* ``graphs``: ``(mb, start) -> (input leaf, output)`` kept by a forward until its backward;
* gradients accumulate in the blocks' ``.grad`` across micro-batches (same as one big batch, up to
  float rounding: each micro-batch's loss is scaled by its share of the batch);
* ``staged``: the step's gradient per block, taken from ``.grad`` by a prepare or given by the client
  (a primary's gradient for a replica), applied by the apply task with the block's own optimizer
  (Adam, like :func:`meshlearn.models.gpt.train_lm`; its moments live here, next to the block).

A task of a newer ``(step, attempt)`` resets the server's graphs, ``.grad`` and staged gradients (the
client abandoned the older attempt); a task of an older one is refused. ``version`` counts applied
steps: forwards, prepares and applies must be for step ``version``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from meshlearn.errors import ProtocolError, UsageError
from meshlearn.models.gpt import lm_loss
from meshlearn.swarm.blocks import BlockStack
from meshlearn.swarm.train_tasks import (
    ApplyTask,
    BackwardTask,
    ForwardTask,
    Grads,
    PrepareTask,
    TrainResult,
)

__all__ = ["ServerState", "TrainWorkspace"]


@dataclass
class ServerState:
    """One server's blocks and training state (see the module docstring)."""

    stack: BlockStack
    opts: dict[int, torch.optim.Optimizer]
    version: int = 0
    current: tuple[int, int] = (-1, -1)
    graphs: dict[tuple[int, int], tuple[torch.Tensor | None, torch.Tensor]] = field(default_factory=dict)
    staged: Grads = field(default_factory=dict)


class TrainWorkspace:
    """Runs the training tasks of every server it holds (``stacks``: server id -> its blocks)."""

    def __init__(self, stacks: dict[str, BlockStack], *, lr: float = 3e-3, flops_per_block: float = 0.0):
        if not (isinstance(lr, (int, float)) and lr > 0):
            raise UsageError(f"lr must be a positive number, got {lr!r}")
        self.lr, self.flops_per_block = float(lr), flops_per_block
        self.servers = {sid: self._state(stack) for sid, stack in stacks.items()}

    @classmethod
    def from_stack(cls, stack: BlockStack, spans: dict[str, tuple[int, int]], **kw: Any) -> TrainWorkspace:
        """Every server of ``spans`` (id -> ``(start, end)``) with its own copy of those blocks of ``stack``."""
        stacks = {}
        for sid, (start, end) in spans.items():
            own = BlockStack(stack.recipe, stack.groups, {})
            for i in range(start, end):
                own.import_block(i, stack.export_block(i))
            stacks[sid] = own
        return cls(stacks, **kw)

    def _state(self, stack: BlockStack) -> ServerState:
        opts = {i: torch.optim.Adam(stack.block(i).parameters(), lr=self.lr) for i in stack.held}
        return ServerState(stack, opts)

    # ------------------------------------------------------------------ dispatch
    def run(self, task: Any) -> TrainResult:
        handler = {ForwardTask: self._forward, BackwardTask: self._backward, PrepareTask: self._prepare,
                   ApplyTask: self._apply}.get(type(task))
        if handler is None:
            raise UsageError(f"TrainWorkspace runs swarm training tasks, got {type(task).__name__}")
        try:
            st = self._enter(task)
            return handler(st, task)
        except ProtocolError as exc:
            return TrainResult(problem=str(exc))

    def task_flops(self, blocks: int, rows: int, factor: float) -> float:
        return self.flops_per_block * blocks * rows * factor

    def digests(self, server: str) -> dict[int, str]:
        stack = self.servers[server].stack
        return {i: stack.digest(i) for i in stack.held}

    def _enter(self, task: Any) -> ServerState:
        st = self.servers.get(task.server)
        if st is None:
            raise ProtocolError(f"server {task.server!r} is not hosted in this workspace")
        tag = (task.step, task.attempt)
        if tag < st.current:
            raise ProtocolError(f"step {task.step} attempt {task.attempt} was superseded by {st.current}")
        if not isinstance(task, BackwardTask) and task.step != st.version:
            raise ProtocolError(f"step {task.step} is not the next step: {st.version} steps are applied here")
        if tag > st.current:
            self._reset(st)
            st.current = tag
        return st

    def _reset(self, st: ServerState) -> None:
        st.graphs.clear()
        st.staged = {}
        for i in st.stack.held:
            st.stack.block(i).zero_grad(set_to_none=True)

    # ------------------------------------------------------------------ phases
    def _forward(self, st: ServerState, task: ForwardTask) -> TrainResult:
        st.stack.check(task.start, task.x)
        leaf = None if task.start == 0 else torch.from_numpy(np.array(task.x)).requires_grad_(True)
        with torch.enable_grad():
            y = st.stack.run_span(task.start, task.end, task.x if leaf is None else leaf)
            if task.targets is not None:
                st.stack.check(0, task.targets)  # token ids, like the inputs
                if tuple(task.targets.shape) != tuple(y.shape[:2]):
                    raise ProtocolError(f"targets of shape {tuple(task.targets.shape)} for logits {tuple(y.shape)}")
                y = lm_loss(y, torch.from_numpy(np.array(task.targets))) * task.scale
        st.graphs[(task.mb, task.start)] = (leaf, y)
        if task.targets is not None:
            return TrainResult(loss=float(y.detach()))
        return TrainResult(y=y.detach().numpy())

    def _backward(self, st: ServerState, task: BackwardTask) -> TrainResult:
        graph = st.graphs.pop((task.mb, task.start), None)
        if graph is None:
            raise ProtocolError(f"no forward of micro-batch {task.mb} at block {task.start} is kept for step "
                                f"{task.step} attempt {task.attempt}")
        leaf, out = graph
        with torch.enable_grad():
            out.backward(None if task.grad is None else _grad_for(out, task.grad))
        return TrainResult(y=None if leaf is None else leaf.grad.numpy())

    def _prepare(self, st: ServerState, task: PrepareTask) -> TrainResult:
        grads: Grads = {}
        for i in range(task.start, task.end):
            block = st.stack.block(i)
            grads[i] = {name: _grad_array(p) for name, p in block.named_parameters()}
            block.zero_grad(set_to_none=True)
        st.staged.update(grads)
        return TrainResult(grads=grads)

    def _apply(self, st: ServerState, task: ApplyTask) -> TrainResult:
        grads = {**st.staged, **task.given}
        missing = [i for i in st.stack.held if i not in grads]
        if missing:
            raise ProtocolError(f"step {task.step} has no gradient for blocks {missing} held here")
        for i in st.stack.held:
            _set_grads(i, st.stack.block(i), grads[i])
        for i in st.stack.held:
            st.opts[i].step()
            st.stack.block(i).zero_grad(set_to_none=True)
        st.version, st.staged = st.version + 1, {}
        return TrainResult(digests={i: st.stack.digest(i) for i in st.stack.held})


def _grad_for(out: torch.Tensor, grad: np.ndarray) -> torch.Tensor:
    if not isinstance(grad, np.ndarray) or grad.dtype != np.float32 or tuple(grad.shape) != tuple(out.shape):
        raise ProtocolError(f"output gradient must be float32 of shape {tuple(out.shape)}, got "
                            f"{getattr(grad, 'dtype', type(grad).__name__)} {getattr(grad, 'shape', '')}")
    if not np.isfinite(grad).all():
        raise ProtocolError("output gradient holds NaN or inf")
    return torch.from_numpy(np.array(grad))


def _grad_array(p: torch.Tensor) -> np.ndarray:
    return np.zeros(tuple(p.shape), np.float32) if p.grad is None else p.grad.detach().numpy().copy()


def _set_grads(i: int, block: torch.nn.Module, grads: dict[str, np.ndarray]) -> None:
    params = dict(block.named_parameters())
    bad = sorted(set(params) ^ set(grads))
    bad += [k for k, g in grads.items() if k in params and (not isinstance(g, np.ndarray) or g.dtype != np.float32
                                                           or tuple(g.shape) != tuple(params[k].shape)
                                                           or not np.isfinite(g).all())]
    if bad:
        raise ProtocolError(f"gradient of block {i} rejected: missing, unknown or malformed {bad[:5]}")
    for name, p in params.items():
        p.grad = torch.from_numpy(np.array(grads[name]))
