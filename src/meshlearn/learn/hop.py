"""The Tram-FL hop: the holder of the model token trains a few minibatches on its own data.

``HopTrainTask`` (in ``tasks.py``) -> ``HopTrainResult``: a fresh seeded shuffle of the node's
partition per hop, ``batches`` SGD steps of cross-entropy, and the per-class sample counts used
(the token's class counter, which the variance routing balances).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from meshlearn.learn.torchio import get_params, set_params
from meshlearn.learn.tasks import HopTrainResult, HopTrainTask
from meshlearn.learn.workspace import TASK_HANDLERS, Workspace

__all__ = ["run_hop_train"]


@TASK_HANDLERS.register("tram_train")
def run_hop_train(ws: Workspace, task: HopTrainTask) -> HopTrainResult:
    model = ws.model
    set_params(model, task.params)
    idx = ws.parts[task.client]
    counts = np.zeros(ws.train.num_classes, dtype=np.int64)
    if len(idx) == 0:
        return HopTrainResult(get_params(model), counts, float("nan"))
    gen = torch.Generator().manual_seed(task.seed)
    order = torch.cat([torch.randperm(len(idx), generator=gen) for _ in range(task.batches)])
    opt = torch.optim.SGD(model.parameters(), lr=task.lr, momentum=task.momentum)
    model.train()
    size, total = min(task.batch_size, len(idx)), 0.0
    for b in range(task.batches):
        rows = idx[order[b * size:(b + 1) * size].numpy()]
        x, y = torch.from_numpy(ws.train.x[rows]), torch.from_numpy(ws.train.y[rows])
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        total += float(loss.detach())
        counts += np.bincount(ws.train.y[rows], minlength=len(counts))
    return HopTrainResult(get_params(model), counts, total / task.batches)
