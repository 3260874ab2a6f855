"""What a training server asks its executor to do (torch-free plain data), one dataclass per phase.

    ForwardTask   run blocks [start, end) with grad on a micro-batch; keep the graph; loss at the head
    BackwardTask  backprop a kept graph from the output gradient (or the loss); return the input gradient
    PrepareTask   hand out the blocks' accumulated gradient of the step (and keep it staged)
    ApplyTask     apply the step's gradient (staged and/or given) with each block's optimizer

Every task names the ``server`` it runs for: in the simulator all servers share one executor, whose
workspace (:class:`meshlearn.swarm.train_blocks.TrainWorkspace`) keeps each server's weights, optimizer
state and graphs apart. ``(step, attempt)`` tags what a task belongs to: a task of an older attempt
than the server's newest is refused (``problem``), so a redone step never mixes with an abandoned one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "ApplyTask",
    "BackwardTask",
    "ForwardTask",
    "Grads",
    "PrepareTask",
    "TrainResult",
    "pack_grads",
    "unpack_grads",
]

Grads = dict[int, dict[str, np.ndarray]]  # block -> parameter name -> gradient


@dataclass(frozen=True, eq=False)
class ForwardTask:
    """Blocks ``[start, end)`` on ``x``; with ``targets`` (the last span) the loss times ``scale``."""

    server: str
    step: int
    attempt: int
    mb: int
    start: int
    end: int
    x: np.ndarray
    targets: np.ndarray | None = None
    scale: float = 1.0
    kind: str = "swarm.train.fwd"

    def flops(self, workspace: Any) -> float:
        return float(workspace.task_flops(self.end - self.start, len(self.x), 1.0))


@dataclass(frozen=True, eq=False)
class BackwardTask:
    """Backprop the graph of ``(step, attempt, mb, start)`` from ``grad`` (None: from the kept loss)."""

    server: str
    step: int
    attempt: int
    mb: int
    start: int
    end: int
    rows: int
    grad: np.ndarray | None = None
    kind: str = "swarm.train.bwd"

    def flops(self, workspace: Any) -> float:
        return float(workspace.task_flops(self.end - self.start, self.rows, 2.0))


@dataclass(frozen=True, eq=False)
class PrepareTask:
    """The accumulated gradient of blocks ``[start, end)`` for the step; it stays staged for ApplyTask."""

    server: str
    step: int
    attempt: int
    start: int
    end: int
    kind: str = "swarm.train.prepare"

    def flops(self, workspace: Any) -> float:
        return 0.0


@dataclass(frozen=True, eq=False)
class ApplyTask:
    """One optimizer step on every held block: gradients staged by PrepareTask plus ``given`` (a primary's)."""

    server: str
    step: int
    attempt: int
    given: Grads = field(default_factory=dict)
    kind: str = "swarm.train.apply"

    def flops(self, workspace: Any) -> float:
        return 0.0


@dataclass(frozen=True, eq=False)
class TrainResult:
    """What a task gives back: ``y`` (activation or input gradient), ``loss``, ``grads``, ``digests``
    (block -> weight digest after an apply), or ``problem`` (why the task was refused)."""

    y: np.ndarray | None = None
    loss: float | None = None
    grads: Grads | None = None
    digests: dict[int, str] | None = None
    problem: str | None = None


def pack_grads(grads: Grads) -> dict[str, np.ndarray]:
    """Message tensors ``"{block}/{name}"`` from per-block gradients."""
    return {f"{block}/{name}": arr for block, params in grads.items() for name, arr in params.items()}


def unpack_grads(tensors: dict[str, np.ndarray]) -> Grads:
    """The inverse of :func:`pack_grads`; names that are not ``"{int}/{name}"`` are skipped."""
    grads: Grads = {}
    for key, arr in tensors.items():
        block, sep, name = key.partition("/")
        if sep and block.isdigit():
            grads.setdefault(int(block), {})[name] = arr
    return grads
