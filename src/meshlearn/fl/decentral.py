"""Decentralized peers without a server: CMFD (consensus distillation) and parameter-averaging gossip.

A peer talks only to its topology neighbours, given at construction. Message kinds (ONLY APPEND:
the strings are part of the wire protocol between versions):

    peer → neighbour  dec.outputs  meta: epoch, rows     tensors: probs (rows, C) float32, softmax of
                                                                  the sender's model on the open rows
    peer → neighbour  dec.params   meta: epoch           tensors: the sender's model parameters

Epoch e at one peer (research/techniques-nishio.md §2):

    one local epoch of SGD (TrainTask)
    → CMFD: softmax on this epoch's open rows (PredictTask); gossip: the parameters themselves
    → send to every neighbour, arm the deadline
    → combine once every unsuspected neighbour's share of epoch e is in, or at the deadline
      (neighbours silent at a deadline are suspected: not waited for until heard from again)
    → CMFD: DistillTask towards the mean of the received outputs (self excluded), loss "mse",
      lr = cmfd_lr × (neighbours heard) / C  — the spec's 0.2 × degree is for an MSE averaged over
      the C classes, DistillTask's sums them;  gossip: w ← s·w + (1−s)·mean(received w)
    → every eval_every epochs (and the last): EvalTask → per-node `node_accuracy`
    → next epoch = max(e + 1, newest epoch a neighbour sent): a recovered peer rejoins the frontier.

The open rows of epoch e are a pure function of (run seed, e), so every peer predicts on the same
rows without coordination. `EpochLedger` is a simulation-only measurement hook, outside the protocol.
Settings: `DecentralSettings` (the ``[decentral]`` section, shared by both algorithms).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from meshlearn.errors import ProtocolError, UsageError
from meshlearn.fl import spec
from meshlearn.fl.aggregate import check_update
from meshlearn.learn.params import Params, weighted_average
from meshlearn.learn.tasks import DistillTask, EvalTask, PredictTask, TrainTask
from meshlearn.node import Context, Node
from meshlearn.wire import Message

__all__ = ["OUTPUTS", "PARAMS", "CMFDPeer", "GossipPeer", "DecentralSettings", "EpochLedger", "open_rows",
           "gossip_mix", "check_probs", "build_cmfd", "build_gossip"]

OUTPUTS = "dec.outputs"
PARAMS = "dec.params"
MAX_AHEAD = 8  # shares for epochs further ahead than this are dropped (bounds a peer's inbox)


class DecentralSettings(BaseModel):
    """One synchronous epoch per peer: local SGD, exchange with neighbours, combine (``[decentral]``).

    Defaults follow research/techniques-nishio.md §2, with learning rates re-tuned for the embedded
    8x8 digits and the reference MLP (benchmarks/bench_cmfd.py has the sweeps behind them).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(200, ge=1, description="epochs each peer runs (local epoch + one exchange each)")
    lr: float = Field(0.05, gt=0, description="local SGD learning rate (spec: 0.01 on MNIST for CMFD, 0.1 "
                                              "for averaging; 0.05 suits digits + MLP for both)")
    batch_size: int = Field(32, ge=1, description="local minibatch size (spec: 100 on 1,000 MNIST images)")
    momentum: float = Field(0.0, ge=0, lt=1, description="local SGD momentum (spec: plain SGD)")
    open_size: int = Field(300, ge=1, description="open-set rows whose outputs CMFD exchanges each epoch; "
                                                  ">= the open set means all of it (spec: 1,000 of 1,000)")
    distill_batch_size: int = Field(20, ge=1, description="minibatch size of the CMFD distillation pass "
                                                          "(spec: 100; 20 is best on digits + MLP)")
    cmfd_lr: float = Field(1.0, gt=0, description="CMFD consensus-distillation rate per neighbour, in the "
                                                  "spec's units (MSE averaged over classes); spec: 0.2, which "
                                                  "reaches only ~50% on digits + MLP where 1.0 reaches 83-93%")
    scale_by_degree: bool = Field(True, description="multiply cmfd_lr by the number of neighbours whose "
                                                    "outputs were used (spec: adjust_lr_codis)")
    loss: Literal["mse", "kl"] = Field("mse", description="CMFD distillation loss on softmax outputs")
    self_weight: float = Field(0.1, ge=0, le=1, description="gossip: w <- s*w + (1-s)*mean(neighbours' w)")
    eval_every: int = Field(10, ge=1, description="each peer evaluates its model every this many epochs "
                                                  "(and at the last)")
    epoch_deadline_s: float = Field(30.0, gt=0, description="virtual seconds a peer waits for its neighbours' "
                                                            "outputs before going on without the silent ones")


def open_rows(epoch: int, n_open: int, size: int, seed: int) -> np.ndarray:
    """Open-set rows of `epoch`: all of them if `size >= n_open`, else a seeded sorted sample."""
    if size >= n_open:
        return np.arange(n_open, dtype=np.int64)
    rng = np.random.default_rng([seed, epoch])
    return np.sort(rng.choice(n_open, size=size, replace=False)).astype(np.int64)


def gossip_mix(own: Params, others: Sequence[Params], self_weight: float) -> Params:
    """w ← s·w + (1 − s)·mean(others); `own` unchanged when no neighbour answered."""
    if not others:
        return own
    mean = weighted_average(list(others), [1.0] * len(others))
    return weighted_average([own, mean], [self_weight, 1.0 - self_weight])


def check_probs(tensors: dict[str, np.ndarray], rows: int, classes: int) -> np.ndarray:
    """The `probs` tensor of a dec.outputs message, or ProtocolError if it is not (rows, C) probabilities."""
    probs = tensors.get("probs")
    if probs is None or probs.shape != (rows, classes) or not np.issubdtype(probs.dtype, np.floating):
        got = None if probs is None else (probs.shape, str(probs.dtype))
        raise ProtocolError(f"dec.outputs needs float probs of shape {(rows, classes)}, got {got}")
    if not np.all(np.isfinite(probs)) or probs.min() < -1e-3 or probs.max() > 1 + 1e-3:
        raise ProtocolError("dec.outputs probs must be finite and lie in [0, 1]")
    return probs


# --------------------------------------------------------------------------- measurement


@dataclass
class _Row:
    tx: int = 0
    acc: dict[str, float] = field(default_factory=dict)
    reporters: set[str] = field(default_factory=set)


class EpochLedger:
    """Simulation-only observer that turns per-peer epoch reports into one run-level row per epoch.

    No single peer knows every peer's accuracy, so in simulation the peers share this object and
    report to it after each epoch. It is an honest measurement hook, not part of the protocol: it
    returns nothing, sends nothing and changes no peer's behaviour (real deployments run without it).
    Row e is written when every peer has reported epoch e or later, has crashed (`watch(is_alive)`),
    or lags the newest report by `lag_limit` epochs; `close()` writes what is left. Row metrics, run
    level, round = e: `accuracy` (mean over reporting peers), `accuracy_min`, `consensus_spread`
    (max − min of peer accuracies; eval epochs only), `peers_reporting`, `bytes_total` (wire bytes
    the peers sent during the epoch), and `virtual_time` last (the run store keys rounds on it).
    """

    def __init__(self, peers: Sequence[str], lag_limit: int = 4):
        self.peers, self.lag_limit = tuple(peers), lag_limit
        self.last = dict.fromkeys(self.peers, 0)
        self.rows: dict[int, _Row] = {}
        self.written = 0  # highest epoch whose row is out
        self.carry = 0  # bytes reported after their epoch's row was written
        self.is_alive = lambda node: True
        self._ctx: Context | None = None

    def watch(self, is_alive) -> None:
        """Let crashed peers stop holding rows back, e.g. `ledger.watch(simulator.is_alive)`."""
        self.is_alive = is_alive

    def report(self, ctx: Context, epoch: int, tx_bytes: int, accuracy: float | None = None) -> None:
        self._ctx, node = ctx, ctx.node_id
        self.last[node] = max(self.last[node], epoch)
        if epoch <= self.written:
            self.carry += tx_bytes
        else:
            row = self.rows.setdefault(epoch, _Row())
            row.tx += tx_bytes
            row.reporters.add(node)
            if accuracy is not None:
                row.acc[node] = float(accuracy)
        self._flush(ctx, force=False)

    def close(self) -> None:
        """Write every pending row (call after the simulation ends)."""
        if self._ctx is not None:
            self._flush(self._ctx, force=True)

    def _complete(self, epoch: int) -> bool:
        frontier = max(self.last.values())
        return all(self.last[p] >= epoch or frontier - self.last[p] >= self.lag_limit or not self.is_alive(p)
                   for p in self.peers)

    def _flush(self, ctx: Context, force: bool) -> None:
        for epoch in sorted(self.rows):
            if not (force or self._complete(epoch)):
                return
            self._write(ctx, epoch, self.rows.pop(epoch))

    def _write(self, ctx: Context, epoch: int, row: _Row) -> None:
        values: list[tuple[str, float]] = []
        if row.acc:
            acc = np.array(list(row.acc.values()))
            values += [("accuracy", acc.mean()), ("accuracy_min", acc.min()), ("consensus_spread", np.ptp(acc))]
        values += [("peers_reporting", len(row.reporters)), ("bytes_total", row.tx + self.carry),
                   ("virtual_time", ctx.now)]
        for key, value in values:
            ctx.record(key, float(value), round=epoch)
        self.carry, self.written = 0, epoch


# --------------------------------------------------------------------------- peers


class _EpochPeer(Node):
    """Epoch machinery shared by CMFD and gossip; subclasses define `_share` and `_combine`."""

    share_kind = ""

    def __init__(self, node_id: str, neighbours: Sequence[str], params: Params, settings: DecentralSettings,
                 *, ledger: EpochLedger | None = None, start_epoch: int = 0):
        super().__init__(node_id)
        self.neighbours, self.settings, self.ledger = tuple(neighbours), settings, ledger
        self.params = params
        self.epoch = start_epoch  # last completed epoch
        self.current = start_epoch  # epoch in progress
        self.phase = "idle"  # train → share → wait → combine → eval → (next epoch) … → done
        self.task_id: int | None = None
        self.inbox: dict[int, dict[str, dict[str, np.ndarray]]] = {}
        self.suspected: set[str] = set()
        self.heard = dict.fromkeys(self.neighbours, 0)  # newest epoch each neighbour sent a valid share for
        self.finished = False
        self._tx_mark = 0

    # ----- events -------------------------------------------------------------------------
    def on_start(self, ctx: Context) -> None:
        """Start, or recover: the epoch in progress is redone from the last completed one."""
        self.task_id, self.inbox = None, {}
        self._next_epoch(ctx)

    def on_message(self, ctx: Context, src: str, msg: Message) -> None:
        epoch = msg.meta.get("epoch")
        if src not in self.neighbours or msg.kind != self.share_kind or not isinstance(epoch, int):
            ctx.log(f"ignored {msg.kind!r} from {src}: not a {self.share_kind} from a neighbour", level="warning")
            return
        if epoch < self.current - 1:
            return  # stale
        try:
            share = self._check_share(msg)
        except ProtocolError as err:
            ctx.log(f"rejected {msg.kind} from {src}: {err}", level="warning")
            return
        self.suspected.discard(src)
        self.heard[src] = max(self.heard[src], min(epoch, self.settings.epochs))
        waiting = epoch == self.current and self.phase in ("train", "share", "wait")
        if waiting or self.current < epoch <= self.current + MAX_AHEAD:  # MAX_AHEAD bounds the inbox
            self.inbox.setdefault(epoch, {})[src] = share
        self._maybe_combine(ctx)

    def on_timer(self, ctx: Context, name: str) -> None:
        if name == "deadline" and self.phase == "wait":
            silent = self._owed()
            if silent:
                ctx.log(f"epoch {self.current}: no share from {silent} by the deadline; going on without them")
            self.suspected.update(silent)
            self._combine_now(ctx)

    def on_task_done(self, ctx: Context, task_id: int, result: Any) -> None:
        if task_id != self.task_id:
            return
        self.task_id = None
        getattr(self, f"_after_{self.phase}")(ctx, result)  # _after_train/_share/_combine/_eval

    # ----- epoch steps --------------------------------------------------------------------
    def _submit(self, ctx: Context, phase: str, task: Any) -> None:
        self.phase, self.task_id = phase, ctx.submit(task)

    def _seed(self, ctx: Context) -> int:
        return int(ctx.rng.integers(2**31))

    def _next_epoch(self, ctx: Context) -> None:
        s = self.settings
        if self.epoch >= s.epochs:
            self._finish(ctx)
            return
        self.current = min(s.epochs, max([self.epoch + 1, *self.heard.values()]))
        self.inbox = {e: got for e, got in self.inbox.items() if e >= self.current}
        self._submit(ctx, "train", TrainTask(client=self.node_id, params=self.params, epochs=1,
                                             batch_size=s.batch_size, lr=s.lr, momentum=s.momentum,
                                             seed=self._seed(ctx)))

    def _after_train(self, ctx: Context, result: Any) -> None:
        self.params = result.params
        self._share(ctx)

    def _send_share(self, ctx: Context, meta: dict, tensors: dict[str, np.ndarray]) -> None:
        msg = Message(self.share_kind, {"epoch": self.current, **meta}, tensors)
        for n in self.neighbours:
            ctx.send(n, msg)
        self.phase = "wait"
        ctx.set_timer("deadline", self.settings.epoch_deadline_s)
        self._maybe_combine(ctx)

    def _owed(self) -> list[str]:
        """Neighbours still expected this epoch: not yet heard for it, not suspected, and not already
        past it (a neighbour that moved on skipped the epoch or sent its share too early to keep)."""
        got = self.inbox.get(self.current, {})
        return [n for n in self.neighbours
                if n not in got and n not in self.suspected and self.heard[n] <= self.current]

    def _maybe_combine(self, ctx: Context) -> None:
        if self.phase == "wait" and not self._owed():
            self._combine_now(ctx)

    def _combine_now(self, ctx: Context) -> None:
        ctx.cancel_timer("deadline")
        got = self.inbox.pop(self.current, {})
        self.phase = "combine"
        self._combine(ctx, [got[n] for n in self.neighbours if n in got])

    def _end_epoch(self, ctx: Context) -> None:
        self.epoch = self.current
        if self.epoch % self.settings.eval_every == 0 or self.epoch >= self.settings.epochs:
            self._submit(ctx, "eval", EvalTask(params=self.params))
        else:
            self._report(ctx, None)
            self._next_epoch(ctx)

    def _after_eval(self, ctx: Context, result: Any) -> None:
        ctx.record("node_accuracy", float(result.accuracy), round=self.epoch, per_node=True)
        tensors = {f"{self.node_id}/{k}": v for k, v in self.params.items()}
        ctx.checkpoint(self.epoch, tensors, {"virtual_time": ctx.now, "node": self.node_id})
        self._report(ctx, float(result.accuracy))
        self._next_epoch(ctx)

    def _report(self, ctx: Context, accuracy: float | None) -> None:
        tx, self._tx_mark = ctx.tx_bytes - self._tx_mark, ctx.tx_bytes
        if self.ledger is not None:
            self.ledger.report(ctx, self.epoch, tx, accuracy)

    def _finish(self, ctx: Context) -> None:
        self.phase, self.finished = "done", True
        ctx.cancel_timer("deadline")
        ctx.stop()

    # ----- algorithm hooks: _check_share, _share, _combine, and _after_share/_after_combine if they submit tasks
    def _check_share(self, msg: Message) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _share(self, ctx: Context) -> None:
        raise NotImplementedError

    def _combine(self, ctx: Context, shares: list[dict[str, np.ndarray]]) -> None:
        raise NotImplementedError


class CMFDPeer(_EpochPeer):
    """Consensus-based multi-hop federated distillation: agree with neighbours in function space."""

    share_kind = OUTPUTS

    def __init__(self, node_id: str, neighbours: Sequence[str], params: Params, settings: DecentralSettings, *,
                 num_classes: int, open_count: int, schedule_seed: int, **kwargs):
        super().__init__(node_id, neighbours, params, settings, **kwargs)
        self.num_classes, self.open_count, self.schedule_seed = num_classes, open_count, schedule_seed

    def _rows(self, epoch: int) -> np.ndarray:
        return open_rows(epoch, self.open_count, self.settings.open_size, self.schedule_seed)

    def _check_share(self, msg: Message) -> dict[str, np.ndarray]:
        rows = len(self._rows(msg.meta["epoch"]))
        if msg.meta.get("rows") != rows:
            raise ProtocolError(f"dec.outputs for epoch {msg.meta['epoch']} must cover {rows} rows")
        return {"probs": check_probs(msg.tensors, rows, self.num_classes)}

    def _share(self, ctx: Context) -> None:
        self._submit(ctx, "share", PredictTask(params=self.params, indices=self._rows(self.current)))

    def _after_share(self, ctx: Context, result: Any) -> None:
        probs = np.ascontiguousarray(result.probs, dtype=np.float32)
        self._send_share(ctx, {"rows": len(probs)}, {"probs": probs})

    def _combine(self, ctx: Context, shares: list[dict[str, np.ndarray]]) -> None:
        if not shares:
            self._end_epoch(ctx)
            return
        s = self.settings
        target = np.mean([sh["probs"] for sh in shares], axis=0, dtype=np.float64).astype(np.float32)
        lr = s.cmfd_lr * (len(shares) if s.scale_by_degree else 1) / (self.num_classes if s.loss == "mse" else 1)
        self._submit(ctx, "combine", DistillTask(client=self.node_id, params=self.params,
                                                 indices=self._rows(self.current), targets=target, loss=s.loss,
                                                 epochs=1, batch_size=s.distill_batch_size, lr=lr,
                                                 seed=self._seed(ctx)))

    def _after_combine(self, ctx: Context, result: Any) -> None:
        self.params = result.params
        self._end_epoch(ctx)


class GossipPeer(_EpochPeer):
    """Parameter-averaging baseline: mix own weights with the neighbours' mean after each local epoch."""

    share_kind = PARAMS

    def _check_share(self, msg: Message) -> dict[str, np.ndarray]:
        check_update(self.params, msg.tensors)
        return msg.tensors

    def _share(self, ctx: Context) -> None:
        self._send_share(ctx, {}, self.params)

    def _combine(self, ctx: Context, shares: list[dict[str, np.ndarray]]) -> None:
        self.params = gossip_mix(self.params, shares, self.settings.self_weight)
        self._end_epoch(ctx)


# --------------------------------------------------------------------------- specs


def _resume_params(init: Params, peer: str, resume: tuple[int, dict[str, np.ndarray]] | None) -> Params:
    if resume is None:
        return dict(init)
    prefix = f"{peer}/"
    mine = {k[len(prefix):]: v for k, v in resume[1].items() if k.startswith(prefix)}
    return mine if set(mine) == set(init) else dict(init)


def _build(cls, setup: spec.Setup, **extra) -> spec.Plan:
    """Peers of ``cls`` on ``network.topology``, identically initialised, sharing one EpochLedger."""
    ids, topology, init = setup.client_ids, setup.topology(), setup.initial_params()
    ledger = EpochLedger(ids, lag_limit=len(ids) + 1)  # > any connected graph's diameter
    start = setup.resume[0] if setup.resume else 0
    nodes = [cls(c, topology.neighbors(c), _resume_params(init, c, setup.resume), setup.settings, ledger=ledger,
                 start_epoch=start, **extra) for c in ids]
    # no single peer ends the run: the simulation ends when every peer has finished and the queue drains
    return spec.Plan(nodes, progress=lambda: ledger.written, stop_on=[], topology=topology,
                     on_built=lambda sim: ledger.watch(sim.is_alive), on_end=ledger.close, alone=_alone)


def _alone(node: "_EpochPeer") -> "_EpochPeer":
    """A peer in its own process reports only its own epochs."""
    node.ledger = EpochLedger([node.node_id])
    return node


def build_cmfd(setup: spec.Setup) -> spec.Plan:
    """CMFD peers over ``network.topology``; the run's root seed fixes the open-row schedule."""
    ws = setup.workspace
    if ws.open is None:
        raise UsageError("CMFD needs a shared unlabelled set: set data.open_size > 0 (or data.open_path)")
    return _build(CMFDPeer, setup, num_classes=ws.train.num_classes, open_count=len(ws.open),
                  schedule_seed=int(setup.config.seed))


def build_gossip(setup: spec.Setup) -> spec.Plan:
    """Parameter-averaging gossip peers over ``network.topology``."""
    return _build(GossipPeer, setup)


def _epochs(config: Any) -> int:
    return config.decentral.epochs


def _horizon_s(config: Any) -> float:
    return 4.0 * config.decentral.epochs * config.decentral.epoch_deadline_s


_COMMON = dict(section="decentral", settings=DecentralSettings, rounds=_epochs, horizon_s=_horizon_s, resumable=False,
               server=False, roles=("peer",),
               ignores={"fl": "peers run [decentral] (epochs, lr, batch_size...), not the server's round settings"})
spec.register(spec.AlgorithmSpec("cmfd", "consensus-based multi-hop federated distillation between neighbours",
                                 build_cmfd, open_set=True, **_COMMON))
spec.register(spec.AlgorithmSpec("gossip", "parameter-averaging gossip between neighbours", build_gossip, **_COMMON))
