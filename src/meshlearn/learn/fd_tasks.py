"""The FD task (federated distillation, Jeong et al. 2018): local training regularised by global per-label logits.

    FDTrainTask(client, params, teacher (C, C), teacher_mask (C,), beta, epochs, ...)
        → FDTrainResult(params, num_samples, loss, steps, label_logits (C, C), label_counts (C,))

Loss per minibatch: CE(f(x), y) + beta · mean over the batch of mask[y] · D(f(x), teacher[y]): a sample
is pulled towards the global mean logit vector of its *true* label, where the server has one
(`teacher_mask`). D is `loss`:

    "kl"   KL(softmax(teacher[y]) ‖ softmax(f(x))): bounded gradients (the default)
    "mse"  mean_c (f(x)_c − teacher[y]_c)² on raw logits, as in the paper; its gradient grows with the
           logit gap, so confident models with large logits need a small lr·beta or it diverges
 After training, one eval-mode pass over the client's data gives the per-label
mean logits (`label_logits[c]`, zeros where `label_counts[c] == 0`) that the client uploads.
The records live in `tasks.py`; importing this module registers the handler of "train_fd".
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from meshlearn.learn.torchio import get_params, set_params
from meshlearn.learn.tasks import FDTrainResult, FDTrainTask
from meshlearn.learn.workspace import TASK_HANDLERS, Workspace

__all__ = ["label_logits", "run_fd_train"]


def label_logits(logits: torch.Tensor, y: torch.Tensor, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-label mean of `logits` rows grouped by `y`: ((C, C) float32 means, (C,) int64 counts)."""
    counts = torch.bincount(y, minlength=num_classes)
    sums = torch.zeros(num_classes, logits.shape[1], dtype=torch.float64).index_add_(0, y, logits.double())
    means = sums / counts.clamp(min=1).unsqueeze(1).double()
    return means.float().numpy(), counts.numpy().astype(np.int64)


@TASK_HANDLERS.register("train_fd")
def run_fd_train(ws: Workspace, task: FDTrainTask) -> FDTrainResult:
    model = ws.model
    set_params(model, task.params)
    x, y = ws._client_data(task.client)
    loss, steps = (float("nan"), 0) if len(y) == 0 or task.epochs == 0 else _fd_sgd(model, x, y, task)
    model.eval()
    with torch.no_grad():
        logits = model(x) if len(y) else torch.zeros(0, len(task.teacher_mask))
    means, counts = label_logits(logits, y, len(task.teacher_mask))
    return FDTrainResult(get_params(model), len(y), loss, steps, means, counts)


def _fd_sgd(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, task: FDTrainTask) -> tuple[float, int]:
    model.train()
    teacher = torch.from_numpy(np.asarray(task.teacher, dtype=np.float32))
    mask = torch.from_numpy(np.asarray(task.teacher_mask, dtype=bool)).float()
    opt = torch.optim.SGD(model.parameters(), lr=task.lr, momentum=task.momentum, weight_decay=task.weight_decay)
    gen = torch.Generator().manual_seed(task.seed)
    steps, total = 0, 0.0
    for _ in range(task.epochs):
        total = 0.0
        for idx in torch.randperm(len(y), generator=gen).split(task.batch_size):
            opt.zero_grad(set_to_none=True)
            logits, yb = model(x[idx]), y[idx]
            distill = (_distance(logits, teacher[yb], task.loss) * mask[yb]).mean()
            loss = F.cross_entropy(logits, yb) + task.beta * distill
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            steps += 1
    return total / len(y), steps


def _distance(logits: torch.Tensor, target_logits: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-sample distance between a batch of logits and its teacher logits (n,)."""
    if kind == "mse":
        return ((logits - target_logits) ** 2).mean(dim=1)
    target = F.softmax(target_logits, dim=1)
    return (target * (F.log_softmax(target_logits, dim=1) - F.log_softmax(logits, dim=1))).sum(dim=1)
