"""Knowledge-distillation tasks on the shared unlabelled ("open") set.

Distillation-based FL (DS-FL, FD) and decentralized consensus distillation (CMFD) exchange model
*outputs* on a common set of unlabelled inputs instead of parameters. Two tasks cover them:

    PredictTask(params, indices)                → PredictResult(probs (n, C), logits (n, C))
    DistillTask(client, params, indices, targets, loss="kl"|"mse", ...)
                                                → TrainResult (trained params; num_samples = n)

`targets` are probability vectors (n, C). KL trains log-softmax outputs towards them (DS-FL);
MSE trains softmax outputs towards them (CMFD's consensus step). Both are deterministic given
the task, like every task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F

from meshlearn.errors import UsageError
from meshlearn.learn.params import get_params, set_params
from meshlearn.learn.tasks import TrainResult
from meshlearn.learn.workspace import TASK_HANDLERS
from meshlearn.models.zoo import TRAIN_FLOPS_FACTOR

if TYPE_CHECKING:
    from meshlearn.learn.workspace import Workspace

__all__ = ["PredictTask", "PredictResult", "DistillTask"]


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


@TASK_HANDLERS.register("predict")
def run_predict(ws: Workspace, task: PredictTask) -> PredictResult:
    model = ws.model
    set_params(model, task.params)
    model.eval()
    with torch.no_grad():
        logits = model(ws.open_data(task.indices))
    return PredictResult(F.softmax(logits, dim=1).numpy().astype(np.float32), logits.numpy().astype(np.float32))


def _distill_loss(logits: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "kl":
        return F.kl_div(F.log_softmax(logits, dim=1), target, reduction="batchmean")
    return F.mse_loss(F.softmax(logits, dim=1), target, reduction="sum") / len(target)


@TASK_HANDLERS.register("distill")
def run_distill(ws: Workspace, task: DistillTask) -> TrainResult:
    model = ws.model
    set_params(model, task.params)
    n = len(task.indices)
    if n == 0 or task.epochs == 0:
        return TrainResult(get_params(model), n, float("nan"), 0)
    model.train()
    x, target = ws.open_data(task.indices), torch.from_numpy(np.asarray(task.targets, dtype=np.float32))
    opt = torch.optim.SGD(model.parameters(), lr=task.lr, momentum=task.momentum)
    gen = torch.Generator().manual_seed(task.seed)
    steps, total = 0, 0.0
    for _ in range(task.epochs):
        total = 0.0
        for idx in torch.randperm(n, generator=gen).split(task.batch_size):
            opt.zero_grad(set_to_none=True)
            loss = _distill_loss(model(x[idx]), target[idx], task.loss)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            steps += 1
    return TrainResult(get_params(model), n, total / n, steps)
