"""Task and result records: what an executor is asked to do and what it hands back.

Plain frozen dataclasses of numbers, strings and numpy arrays, so they pickle to a process
pool or Ray worker and encode onto the wire. A task carries everything that decides its
result (parameters, hyper-parameters, seed): the same task on the same workspace gives a
bit-identical result. ``flops(workspace)`` lets the simulator's device model price a task.

Rule: this module imports no torch. Nodes build these records; the handlers that run them
(``workspace.py``, ``distill.py``, ``fd_tasks.py``, ``hop.py``) live beside the workspace.

    TrainTask    -> TrainResult     SGD on a client's partition (CE, optional FedProx term)
    EvalTask     -> EvalResult      accuracy and CE on the test set
    PredictTask  -> PredictResult   softmax and logits on rows of the open (unlabelled) set
    DistillTask  -> TrainResult     train towards target probabilities on open rows (KL or MSE)
    FDTrainTask  -> FDTrainResult   CE + beta · D(logits, teacher[label]), then per-label logits
    HopTrainTask -> HopTrainResult  a few minibatches on one node's data (Tram-FL)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np

from meshlearn.errors import UsageError

if TYPE_CHECKING:
    from meshlearn.learn.workspace import Workspace

__all__ = ["TRAIN_FLOPS_FACTOR", "TrainTask", "TrainResult", "EvalTask", "EvalResult", "PredictTask", "PredictResult",
           "DistillTask", "FDTrainTask", "FDTrainResult", "HopTrainTask", "HopTrainResult", "Task", "Result"]

# One training step (forward + backward) costs about three forward passes.
TRAIN_FLOPS_FACTOR = 3


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


@dataclass(frozen=True, eq=False)
class PredictTask:
    """Class probabilities (softmax) and logits of `params` on rows `indices` of the open set."""

    kind: ClassVar[str] = "predict"
    params: dict[str, np.ndarray]
    indices: np.ndarray

    def flops(self, workspace: Workspace) -> int:
        return workspace.flops_per_sample * len(self.indices)


@dataclass(frozen=True, eq=False)
class PredictResult:
    probs: np.ndarray  # (n, C) float32, rows sum to 1
    logits: np.ndarray  # (n, C) float32


@dataclass(frozen=True, eq=False, kw_only=True)
class DistillTask:
    """Train `params` so its outputs on open rows `indices` match `targets` (n, C probabilities)."""

    kind: ClassVar[str] = "distill"
    client: str
    params: dict[str, np.ndarray]
    indices: np.ndarray
    targets: np.ndarray
    loss: Literal["kl", "mse"] = "kl"
    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.0
    seed: int

    def __post_init__(self) -> None:
        if self.loss not in ("kl", "mse"):
            raise UsageError(f"DistillTask loss must be 'kl' or 'mse', got {self.loss!r}")
        if len(self.indices) != len(self.targets):
            raise UsageError(f"DistillTask has {len(self.indices)} indices but {len(self.targets)} target rows")
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0:
            raise UsageError("DistillTask needs epochs >= 0, batch_size >= 1 and lr > 0")

    def flops(self, workspace: Workspace) -> int:
        return TRAIN_FLOPS_FACTOR * workspace.flops_per_sample * len(self.indices) * self.epochs


@dataclass(frozen=True, eq=False, kw_only=True)
class FDTrainTask:
    """Train `params` on `client`'s partition with CE + beta · MSE towards `teacher[y]` (where `teacher_mask[y]`)."""

    kind: ClassVar[str] = "train_fd"
    client: str
    params: dict[str, np.ndarray]
    teacher: np.ndarray  # (C, C) float32: row c = global mean logits of label c
    teacher_mask: np.ndarray  # (C,) bool: rows of `teacher` that exist
    beta: float
    loss: Literal["kl", "mse"] = "kl"
    epochs: int
    batch_size: int
    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0
    seed: int

    def __post_init__(self) -> None:
        c = len(self.teacher_mask)
        if np.shape(self.teacher) != (c, c) or np.ndim(self.teacher_mask) != 1:
            raise UsageError(f"FDTrainTask needs teacher (C, C) and teacher_mask (C,), got {np.shape(self.teacher)} "
                             f"and {np.shape(self.teacher_mask)}")
        if self.loss not in ("kl", "mse"):
            raise UsageError(f"FDTrainTask loss must be 'kl' or 'mse', got {self.loss!r}")
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0 or self.beta < 0 or not 0 <= self.momentum < 1:
            raise UsageError("FDTrainTask needs epochs >= 0, batch_size >= 1, lr > 0, beta >= 0, 0 <= momentum < 1")

    def flops(self, workspace: Workspace) -> int:
        """Training passes plus the final forward pass that measures per-label logits."""
        n = workspace.num_samples(self.client)
        return workspace.flops_per_sample * n * (TRAIN_FLOPS_FACTOR * self.epochs + 1)


@dataclass(frozen=True, eq=False)
class FDTrainResult:
    """Trained parameters and the per-label mean logits of the trained model on the client's data."""

    params: dict[str, np.ndarray]
    num_samples: int
    loss: float  # mean total loss (CE + beta · D) over the last epoch; NaN if no step
    steps: int
    label_logits: np.ndarray  # (C, C) float32
    label_counts: np.ndarray  # (C,) int64


@dataclass(frozen=True, eq=False, kw_only=True)
class HopTrainTask:
    """Train `params` on `batches` minibatches of `client`'s data (a fresh seeded shuffle each hop)."""

    kind: ClassVar[str] = "tram_train"
    client: str
    params: dict[str, np.ndarray]
    batches: int
    batch_size: int
    lr: float
    momentum: float = 0.0
    seed: int

    def flops(self, workspace: Workspace) -> int:
        n = min(self.batches * self.batch_size, workspace.num_samples(self.client) * self.batches)
        return TRAIN_FLOPS_FACTOR * workspace.flops_per_sample * n


@dataclass(frozen=True, eq=False)
class HopTrainResult:
    params: dict[str, np.ndarray]
    label_counts: np.ndarray  # (C,) int64: samples of each class used in this hop
    loss: float


Task = TrainTask | EvalTask | PredictTask | DistillTask | FDTrainTask | HopTrainTask
Result = TrainResult | EvalResult | PredictResult | FDTrainResult | HopTrainResult
