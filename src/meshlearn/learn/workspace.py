"""The ``Workspace``: data, partition and model recipe that turn tasks into results.

One workspace lives in each executor (process, Ray actor, the simulator's own process). It
builds one model lazily and re-uses it for every task by loading the task's parameters, so
a task never pays for model construction. It is not thread-safe: one per worker. All
randomness comes from the task's seed: the same task gives a bit-identical result.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from meshlearn.data.datasets import Dataset
from meshlearn.errors import UsageError
from meshlearn.learn.params import Params
from meshlearn.learn.torchio import get_params, set_params
from meshlearn.learn.tasks import EvalResult, EvalTask, Result, Task, TrainResult, TrainTask
from meshlearn.models.zoo import build_model, flops_per_sample
from meshlearn.registry import Registry

__all__ = ["TASK_HANDLERS", "Workspace", "initial_params", "use_threads", "warm_up"]

# kind -> handler(workspace, task) -> result. Every module of meshlearn.learn that runs a task kind
# registers its handler here (distill.py, fd_tasks.py, hop.py); Workspace.run looks the kind up.
TASK_HANDLERS: Registry = Registry("tasks", discover="meshlearn.learn")


class Workspace:
    """Runs ``TrainTask``/``EvalTask`` against ``train``/``test`` with a cached model instance."""

    def __init__(
        self,
        train: Dataset,
        test: Dataset,
        parts: Mapping[str, np.ndarray],
        model_name: str,
        model_params: Mapping[str, Any] | None = None,
        model_seed: int = 0,
        open: Dataset | None = None,
    ):
        self.train, self.test, self.open = train, test, open
        self.parts = {str(c): np.asarray(idx, dtype=np.int64) for c, idx in parts.items()}
        self.model_name, self.model_params, self.model_seed = model_name, dict(model_params or {}), int(model_seed)
        self._check_parts()
        self._reset_caches()

    def _check_parts(self) -> None:
        for client, idx in self.parts.items():
            if idx.ndim != 1 or (len(idx) and (idx.min() < 0 or idx.max() >= len(self.train))):
                raise UsageError(f"partition of client {client!r} must be 1-D indices in 0..{len(self.train) - 1}")

    def _reset_caches(self) -> None:
        self._model: nn.Module | None = None
        self._flops: int | None = None
        self._tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def __getstate__(self) -> dict[str, Any]:  # ship data and recipe, rebuild caches on arrival
        state = dict(self.__dict__)
        for key in ("_model", "_flops", "_tensors"):
            state.pop(key)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_caches()

    # ------------------------------------------------------------ model and data

    def build(self) -> nn.Module:
        """A fresh model with the workspace's initial weights (not the cached instance)."""
        return build_model(self.model_name, self.train.input_shape, self.train.num_classes,
                           self.model_seed, **self.model_params)

    @property
    def model(self) -> nn.Module:
        """The cached model instance tasks load their parameters into."""
        if self._model is None:
            self._model = self.build()
        return self._model

    @property
    def flops_per_sample(self) -> int:
        """Forward FLOPs of the model for one sample."""
        if self._flops is None:
            self._flops = flops_per_sample(self.model, self.train.input_shape)
        return self._flops

    @property
    def clients(self) -> list[str]:
        return list(self.parts)

    def num_samples(self, client: str) -> int:
        return len(self._indices(client))

    def _indices(self, client: str) -> np.ndarray:
        try:
            return self.parts[client]
        except KeyError:
            known = ", ".join(list(self.parts)[:10]) + (" …" if len(self.parts) > 10 else "")
            raise UsageError(f"unknown client {client!r} (known: {known or 'none'})") from None

    def _client_data(self, client: str) -> tuple[torch.Tensor, torch.Tensor]:
        if client not in self._tensors:
            idx = self._indices(client)
            self._tensors[client] = (torch.from_numpy(self.train.x[idx]), torch.from_numpy(self.train.y[idx]))
        return self._tensors[client]

    # ------------------------------------------------------------ tasks

    def run(self, task: Task) -> Result:
        """Execute ``task`` with the handler registered for ``task.kind`` in ``TASK_HANDLERS``."""
        return TASK_HANDLERS.get(getattr(task, "kind", None))(self, task)

    def open_data(self, indices: np.ndarray | None = None) -> torch.Tensor:
        """Inputs of the shared unlabelled ("open") set, all or the given rows; labels never leave here."""
        if self.open is None:
            raise UsageError("this workspace has no open (unlabelled) set; set data.open_size > 0")
        x = torch.from_numpy(self.open.x)
        return x if indices is None else x[torch.from_numpy(np.asarray(indices, dtype=np.int64))]


@TASK_HANDLERS.register("train")
def run_train(ws: Workspace, task: TrainTask) -> TrainResult:
    model = ws.model
    set_params(model, task.params)
    x, y = ws._client_data(task.client)
    if len(y) == 0 or task.epochs == 0:
        return TrainResult(get_params(model), len(y), float("nan"), 0)
    model.train()
    loss, steps = _sgd(model, x, y, task)
    return TrainResult(get_params(model), len(y), loss, steps)


@TASK_HANDLERS.register("evaluate")
def run_evaluate(ws: Workspace, task: EvalTask) -> EvalResult:
    model = ws.model
    set_params(model, task.params)
    model.eval()
    x, y = torch.from_numpy(ws.test.x), torch.from_numpy(ws.test.y)
    loss_sum, correct = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(y), task.batch_size):
            logits = model(x[start : start + task.batch_size])
            target = y[start : start + task.batch_size]
            loss_sum += float(F.cross_entropy(logits, target, reduction="sum"))
            correct += int((logits.argmax(dim=1) == target).sum())
    n = len(y)
    return EvalResult(correct / n if n else float("nan"), loss_sum / n if n else float("nan"), n)


def _sgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, task: TrainTask) -> tuple[float, int]:
    """Minibatch SGD for ``task.epochs``; returns (mean CE of the last epoch, steps taken)."""
    anchor = [p.detach().clone() for p in model.parameters()] if task.prox_mu > 0 else None
    opt = torch.optim.SGD(model.parameters(), lr=task.lr, momentum=task.momentum, weight_decay=task.weight_decay)
    gen = torch.Generator().manual_seed(task.seed)
    steps, epoch_loss = 0, torch.zeros(())
    for _ in range(task.epochs):
        epoch_loss = torch.zeros(())
        for idx in torch.randperm(len(y), generator=gen).split(task.batch_size):
            ce = _step(model, opt, x[idx], y[idx], anchor, task.prox_mu)
            epoch_loss += ce * len(idx)
            steps += 1
    return float(epoch_loss) / len(y), steps


def _step(model: nn.Module, opt: torch.optim.Optimizer, xb: torch.Tensor, yb: torch.Tensor,
          anchor: list[torch.Tensor] | None, mu: float) -> torch.Tensor:
    """One SGD step on CE (+ (mu/2)·||w − anchor||²); returns the detached CE."""
    opt.zero_grad(set_to_none=True)
    ce = F.cross_entropy(model(xb), yb)
    loss = ce
    if anchor is not None:
        prox = sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor))
        loss = ce + 0.5 * mu * prox
    loss.backward()
    opt.step()
    return ce.detach()


def initial_params(workspace: Workspace) -> Params:
    """The round-0 global parameters: the model built from the workspace's model seed."""
    return get_params(workspace.build())


def use_threads(n: int) -> None:
    """Run torch's intra-op work on ``n`` threads (its default spins one per core in every process)."""
    torch.set_num_threads(int(n))


def warm_up(workspace: Workspace) -> None:
    """Pay torch's one-time optimizer import (~2 s) now, not inside the first round's deadline."""
    torch.optim.SGD(workspace.model.parameters(), lr=0.1)
