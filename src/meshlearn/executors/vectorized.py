"""The vectorized executor: many clients of one architecture trained in one batched pass.

Simulating 1,000 clients that each take a few SGD steps on a small model is dominated by
per-step Python and dispatch overhead, not arithmetic. This executor defers every submitted
``TrainTask``; the first ``result()`` asked of any of them trains *all* pending train tasks
together: their parameters (and momentum buffers) are stacked along a leading client axis and
one ``torch.vmap``-ed ``torch.func.grad`` of ``functional_call`` computes every client's
gradient per step.

Each client's result equals the inline path's (``meshlearn.learn.workspace.run_train``) within
float tolerance (batched matmuls sum in a different order):

* minibatch order: the same ``torch.Generator().manual_seed(task.seed)`` and one
  ``randperm(n)`` per epoch, split into the same batches;
* partial batches are padded with weight-0 rows and the loss divided by the real batch size, so
  the gradient is the inline one;
* clients run different numbers of steps (sample counts, epochs): clients are sorted by step
  count, so the clients still training at step ``t`` are a prefix and are updated in place on a
  slice; finished clients are never touched (no weight decay or momentum drift);
* SGD exactly as ``torch.optim.SGD`` (weight decay, momentum with the first buffer equal to the
  gradient, no dampening/Nesterov) and the FedProx term ``(mu/2)·||w − w0||²``.

How much gets batched depends on the caller: a flush holds the train tasks submitted before the
first ``result()``. In the simulator that is every task submitted before the earliest virtual
completion; clients whose TRAIN message arrives after a fast client finishes form the next batch
(a 200-client FedAvg round on ``iot`` devices ran as ~67 passes). The asyncio runtime asks for each
result right after submitting, so there every pass trains one task (no gain over inline).

Tasks are grouped by batch size, learning rate, momentum, weight decay and FedProx mu (epochs and
sample counts may differ inside a group); groups are processed in chunks of ``max_clients``.
Everything else runs inline, lazily on its own ``result()``: non-train tasks, empty clients or
zero epochs, and models vmap cannot reproduce exactly (ones with buffers, e.g. BatchNorm, or
dropout, whose inline randomness comes from torch's global RNG). A task whose parameters do not fit
the model raises the inline ``ProtocolError`` from its own ``result()``, not from its neighbours'.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from meshlearn.errors import UsageError
from meshlearn.executors.inline import Workspace, _Deferred
from meshlearn.host import Handle

__all__ = ["VectorizedExecutor"]

_log = logging.getLogger("meshlearn.executors.vectorized")


class _Pending:
    """Handle of a deferred train task: the first ``result()`` flushes every pending train task."""

    __slots__ = ("_executor", "task", "_done", "_value", "_error")

    def __init__(self, executor: "VectorizedExecutor", task: Any):
        self._executor, self.task = executor, task
        self._done, self._value, self._error = False, None, None

    def _set(self, value: Any = None, error: BaseException | None = None) -> None:
        self._value, self._error, self._done = value, error, True
        self.task = None  # drop the input parameters once the result exists

    def result(self) -> Any:
        if not self._done:
            self._executor._flush()
            if not self._done:  # cannot happen: every pending handle is settled by a flush
                raise RuntimeError("vectorized executor lost a pending task")
        if self._error is not None:
            raise self._error
        return self._value


@dataclass
class _Stats:
    """What the executor has done so far (for benchmarks and tests)."""

    batched_tasks: int = 0  # train tasks trained in a vmap pass
    batches: int = 0  # vmap passes (one per group chunk)
    inline_tasks: int = 0  # train tasks that fell back to inline


class VectorizedExecutor:
    """Runs pending train tasks together, batched with ``torch.vmap``; other tasks inline.

    ``max_clients`` caps how many clients one batched pass trains (memory grows with it: stacked
    parameters, momentum, gradients and one minibatch of activations per client).
    """

    def __init__(self, workspace: Workspace, max_clients: int = 4096):
        if max_clients < 1:
            raise UsageError(f"max_clients must be >= 1, got {max_clients}")
        self.workspace, self.max_clients = workspace, int(max_clients)
        self.stats = _Stats()
        self._pending: list[_Pending] = []
        self._lock = threading.RLock()
        self._vmappable: bool | None = None
        self._model: nn.Module | None = None
        self._shapes: dict[str, tuple[int, ...]] | None = None

    # ------------------------------------------------------------ Executor protocol

    def submit(self, task: Any) -> Handle:
        if getattr(task, "kind", None) != "train":
            return _Deferred(self.workspace, task)
        handle = _Pending(self, task)
        with self._lock:
            self._pending.append(handle)
        return handle

    def flops(self, task: Any) -> float:
        return float(task.flops(self.workspace))

    def close(self) -> None:
        """Nothing to release; handles already returned still give their results (as inline)."""

    # ------------------------------------------------------------ batching

    def _flush(self) -> None:
        """Train every pending train task; each handle gets its result or its own error."""
        with self._lock:
            pending, self._pending = [h for h in self._pending if not h._done], []
            if not pending:
                return
            groups: dict[tuple, list[_Pending]] = {}
            for h in pending:
                try:
                    key = self._group_key(h.task)
                except Exception:  # noqa: BLE001 - inline reports it from this handle's result()
                    key = None
                if key is None:
                    self._run_inline(h)
                else:
                    groups.setdefault(key, []).append(h)
            for key, members in groups.items():
                for start in range(0, len(members), self.max_clients):
                    chunk = members[start : start + self.max_clients]
                    try:
                        self._train_batch(key, chunk)
                    except Exception as exc:  # noqa: BLE001 - unexpected: let inline give each task its own outcome
                        _log.warning("vectorized pass over %d train tasks failed (%s: %s); running them inline",
                                     len(chunk), type(exc).__name__, exc)
                        for h in chunk:
                            if not h._done:
                                self._run_inline(h)

    def _run_inline(self, h: _Pending) -> None:
        self.stats.inline_tasks += 1
        try:
            h._set(self.workspace.run(h.task))
        except Exception as exc:  # noqa: BLE001 - re-raised from this handle's result()
            h._set(error=exc)

    @property
    def _template(self) -> nn.Module:
        """A private instance of the workspace's model: ``functional_call`` swaps parameters into it
        for the duration of a pass, so the workspace's cached model (inline tasks) is never touched."""
        if self._model is None:
            self._model = self.workspace.build()
            self._model.train()
        return self._model

    def _model_ok(self) -> bool:
        if self._vmappable is None:
            model = self._template
            self._vmappable = not any(True for _ in model.buffers()) and not any(
                isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules())
        return self._vmappable

    def _group_key(self, task: Any) -> tuple | None:
        """Hyper-parameters that must agree inside one batched pass, or None: run this one inline."""
        ws = self.workspace
        if not self._model_ok() or task.epochs == 0 or task.client not in ws.parts or ws.num_samples(task.client) == 0:
            return None
        if self._shapes is None:
            self._shapes = {k: tuple(v.shape) for k, v in self._template.named_parameters()}
        shapes = self._shapes
        params = task.params
        if params.keys() != shapes.keys():
            return None  # inline raises the ProtocolError naming the mismatch
        for k, shape in shapes.items():
            value = params[k]
            if not isinstance(value, np.ndarray):
                value = np.asarray(value)
            if value.shape != shape or value.dtype.kind not in "fiub":
                return None
        return (int(task.batch_size), float(task.lr), float(task.momentum), float(task.weight_decay),
                float(task.prox_mu))

    def _train_batch(self, key: tuple, handles: list[_Pending]) -> None:
        from meshlearn.learn.tasks import TrainResult

        batch_size, lr, momentum, weight_decay, mu = key
        ws = self.workspace
        model = self._template
        names = [k for k, _ in model.named_parameters()]
        dtypes = {k: p.dtype for k, p in model.named_parameters()}
        state_keys = list(model.state_dict())  # == names (no buffers), kept for get_params order

        tasks = [h.task for h in handles]
        counts, per_epoch, epochs, total, order, offsets, flat = _schedule(ws, tasks, batch_size)
        K, T = len(tasks), int(total.max())
        flat_t, offsets_t = torch.from_numpy(flat), torch.from_numpy(offsets)
        arange_b = torch.arange(batch_size)
        last_epoch_start = torch.from_numpy(((epochs - 1) * per_epoch)[order])
        # clients still training at step t: a prefix of the sorted order
        active_until = np.searchsorted(-total[order], -np.arange(T), side="left").tolist()

        x_all = torch.from_numpy(ws.train.x)
        y_all = torch.from_numpy(ws.train.y)

        params = _stack_params(tasks, order, dtypes)  # (K, ...) per parameter, in sorted client order
        anchor = {k: v.clone() for k, v in params.items()} if mu > 0 else None
        bufs = {k: torch.zeros_like(v) for k, v in params.items()} if momentum != 0 else None

        def loss_fn(p, a, xb, yb, wb, nb):
            logits = functional_call(model, p, (xb,))
            ce = (F.cross_entropy(logits, yb, reduction="none") * wb).sum() / nb
            loss = ce
            if a is not None:
                prox = sum(((p[k] - a[k]) ** 2).sum() for k in names)
                loss = ce + 0.5 * mu * prox
            return loss, ce

        grad_fn = vmap(grad(loss_fn, has_aux=True), in_dims=(0, 0 if mu > 0 else None, 0, 0, 0, 0))
        epoch_loss = torch.zeros(K, dtype=torch.float32)
        for t in range(T):
            a = active_until[t]
            rows = flat_t[(offsets_t[:a] + t * batch_size).unsqueeze(1) + arange_b]  # (a, B)
            real = rows >= 0
            idx = torch.where(real, rows, torch.zeros_like(rows))
            wb = real.to(torch.float32)
            nb = wb.sum(dim=1)  # real batch sizes, >= 1 for every active client
            p_a = {k: v[:a] for k, v in params.items()}
            a_a = {k: v[:a] for k, v in anchor.items()} if anchor is not None else None
            grads, ce = grad_fn(p_a, a_a, x_all[idx], y_all[idx], wb, nb)
            with torch.no_grad():
                _sgd_update(p_a, grads, bufs, a, lr, momentum, weight_decay)
                in_last = t >= last_epoch_start[:a]
                epoch_loss[:a] += torch.where(in_last, ce.detach() * nb, torch.zeros_like(ce))

        stacked = {k: params[k].numpy() for k in state_keys}
        losses = epoch_loss.tolist()
        for slot, i in enumerate(order.tolist()):
            n = int(counts[i])
            out = {k: v[slot].astype(np.float32, copy=True) for k, v in stacked.items()}
            handles[i]._set(TrainResult(out, n, losses[slot] / n, int(total[i])))
        self.stats.batched_tasks += K
        self.stats.batches += 1


def _schedule(ws, tasks: list, batch_size: int):
    """Per-client batch schedule, identical to the inline loop (one seeded randperm per epoch).

    Returns counts, batches per epoch, epochs, total steps, the client order (most steps first, so
    the clients still training always form a prefix), offsets, and `flat`, where
    ``flat[offset + t*B : offset + (t+1)*B]`` are a client's sample indices at its step t (-1 = padding).
    """
    counts = np.array([ws.num_samples(t.client) for t in tasks], dtype=np.int64)
    per_epoch = -(-counts // batch_size)  # ceil(n / B)
    epochs = np.array([t.epochs for t in tasks], dtype=np.int64)
    total = per_epoch * epochs
    order = np.argsort(-total, kind="stable")
    sizes = total[order] * batch_size
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    flat = np.full(int(sizes.sum()), -1, dtype=np.int64)
    for slot, i in enumerate(order.tolist()):
        gen = torch.Generator().manual_seed(tasks[i].seed)
        n, span, part = int(counts[i]), int(per_epoch[i]) * batch_size, ws.parts[tasks[i].client]
        for e in range(int(epochs[i])):
            start = int(offsets[slot]) + e * span
            flat[start : start + n] = part[torch.randperm(n, generator=gen).numpy()]
    return counts, per_epoch, epochs, total, order, offsets, flat


def _stack_params(tasks: list, order: np.ndarray, dtypes: dict) -> dict:
    """Each parameter of every task stacked along a new first axis, in `order`."""
    params = {}
    for k, dtype in dtypes.items():
        np_dtype = torch.empty(0, dtype=dtype).numpy().dtype
        params[k] = torch.from_numpy(np.stack([np.asarray(tasks[i].params[k], dtype=np_dtype) for i in order]))
    return params


def _sgd_update(p_a: dict, grads: dict, bufs: dict | None, a: int, lr: float, momentum: float,
                weight_decay: float) -> None:
    """torch.optim.SGD's update (weight decay, momentum buffer) on the first `a` stacked clients, in place."""
    for k, g in grads.items():
        if weight_decay != 0:
            g = g.add(p_a[k], alpha=weight_decay)
        if bufs is not None:
            buf = bufs[k][:a]
            buf.mul_(momentum).add_(g)
            g = buf
        p_a[k].add_(g, alpha=-lr)
