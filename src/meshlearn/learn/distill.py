"""Knowledge-distillation tasks on the shared unlabelled ("open") set.

Distillation-based FL (DS-FL, FD) and decentralized consensus distillation (CMFD) exchange model
*outputs* on a common set of unlabelled inputs instead of parameters. Two tasks cover them:

    PredictTask(params, indices)                → PredictResult(probs (n, C), logits (n, C))
    DistillTask(client, params, indices, targets, loss="kl"|"mse", ...)
                                                → TrainResult (trained params; num_samples = n)

`targets` are probability vectors (n, C). KL trains log-softmax outputs towards them (DS-FL);
MSE trains softmax outputs towards them (CMFD's consensus step). Both are deterministic given
the task, like every task. The records live in ``tasks.py``; this module runs them.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from meshlearn.learn.torchio import get_params, set_params
from meshlearn.learn.tasks import DistillTask, PredictResult, PredictTask, TrainResult
from meshlearn.learn.workspace import TASK_HANDLERS, Workspace

__all__ = ["run_predict", "run_distill"]


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
