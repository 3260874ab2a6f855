"""Task and result records: what an executor is asked to do and what it hands back.

Plain frozen dataclasses of numbers, strings and numpy arrays, so they pickle to a process
pool or Ray worker and encode onto the wire. A task carries everything that decides its
result (parameters, hyper-parameters, seed): the same task on the same workspace gives a
bit-identical result. ``flops(workspace)`` lets the simulator's device model price a task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from meshlearn.errors import UsageError
from meshlearn.models.zoo import TRAIN_FLOPS_FACTOR

if TYPE_CHECKING:
    from meshlearn.learn.workspace import Workspace

__all__ = ["TrainTask", "TrainResult", "EvalTask", "EvalResult", "Task", "Result"]


@dataclass(frozen=True, eq=False, kw_only=True)
class TrainTask:
    """Train ``params`` on ``client``'s partition: SGD, cross-entropy, optional FedProx term.

    ``prox_mu`` adds (mu/2)·||w − params||²; keep ``lr * prox_mu < 2`` or the pull diverges.
    """

    kind: ClassVar[str] = "train"
    client: str
    params: dict[str, np.ndarray]
    epochs: int
    batch_size: int
    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0
    prox_mu: float = 0.0
    seed: int

    def __post_init__(self) -> None:
        checks = {
            "epochs >= 0": self.epochs >= 0,
            "batch_size >= 1": self.batch_size >= 1,
            "lr > 0": self.lr > 0,
            "0 <= momentum < 1": 0 <= self.momentum < 1,
            "weight_decay >= 0": self.weight_decay >= 0,
            "prox_mu >= 0": self.prox_mu >= 0,
        }
        failed = [rule for rule, ok in checks.items() if not ok]
        if failed:
            raise UsageError(f"TrainTask for {self.client!r} breaks: {', '.join(failed)}")

    def flops(self, workspace: Workspace) -> int:
        """3 x forward FLOPs x local samples x epochs."""
        return TRAIN_FLOPS_FACTOR * workspace.flops_per_sample * workspace.num_samples(self.client) * self.epochs


@dataclass(frozen=True, eq=False)
class TrainResult:
    """Trained parameters; ``loss`` is the mean cross-entropy over the last epoch (NaN if no step)."""

    params: dict[str, np.ndarray]
    num_samples: int
    loss: float
    steps: int


@dataclass(frozen=True, eq=False)
class EvalTask:
    """Evaluate ``params`` on the workspace's test set."""

    kind: ClassVar[str] = "evaluate"
    params: dict[str, np.ndarray]
    batch_size: int = 1024

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise UsageError(f"EvalTask batch_size must be >= 1, got {self.batch_size}")

    def flops(self, workspace: Workspace) -> int:
        """Forward FLOPs x test samples."""
        return workspace.flops_per_sample * len(workspace.test)


@dataclass(frozen=True, eq=False)
class EvalResult:
    """Top-1 accuracy and mean cross-entropy over ``num_samples`` test samples."""

    accuracy: float
    loss: float
    num_samples: int


Task = TrainTask | EvalTask
Result = TrainResult | EvalResult
