"""The federated-learning server node (FedAvg / FedProx round control), without I/O.

Round life-cycle:

    wait for `min_clients` joins (or `join_timeout_s`)
    → the selector picks k clients (`clients_per_round`, else ⌈fraction · roster⌉), send them the
      global parameters, arm the deadline timer
    → collect updates (wrong round, unknown sender or wrong shape: rejected and logged)
    → all selected replied, or deadline: if ≥ min_completion of them replied, aggregate;
      otherwise keep the old model (round recorded as failed)
    → tell the selector how each selected client did (ClientFeedback)
    → evaluate the global model (a task), record metrics, checkpoint, next round or stop.

Selection is pluggable (`meshlearn.fl.selection`); the default `random` selector makes exactly the
rng draws this server always made. Clients' fl.join meta goes to `selector.telemetry`.

FedProx differs from FedAvg only in the clients' proximal term (`prox_mu` in fl.train).
Resuming: pass `resume=(round, params)` and the server continues at round + 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from meshlearn.errors import ProtocolError
from meshlearn.fl import messages as kinds
from meshlearn.fl.messages import Kinds
from meshlearn.fl.aggregate import AGGREGATORS, check_update
from meshlearn.fl.selection import ClientFeedback, RandomSelector, Selector
from meshlearn.node import Context, Node
from meshlearn.wire import Message

__all__ = ["FLServer", "ServerSettings"]

Params = dict[str, np.ndarray]


@dataclass(frozen=True)
class ServerSettings:
    rounds: int = 30
    fraction: float = 1.0  # share of joined clients selected each round
    clients_per_round: int | None = None  # fixed k per round (capped at the roster); overrides fraction
    min_clients: int = 2  # joins to wait for before round 1
    join_timeout_s: float = 60.0  # start anyway after this long if ≥ 1 client joined
    round_deadline_s: float = 60.0  # updates after this are late and ignored
    min_completion: float = 0.5  # share of selected clients that must reply for the round to count
    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.0
    weight_decay: float = 0.0
    prox_mu: float = 0.0  # > 0 turns FedAvg into FedProx
    aggregator: str = "fedavg"


@dataclass
class _Round:
    number: int
    selected: list[str]
    updates: dict[str, tuple[Params, int]]
    started_at: float
    tx0: int
    rx0: int
    rejected: int = 0
    feedback: dict[str, ClientFeedback] = field(default_factory=dict)  # accepted updates only


class FLServer(Node):
    """Coordinates FedAvg/FedProx rounds over whichever clients join.

    Round control lives here once; protocols with other payloads (DS-FL, FD in ``dsfl.py`` /
    ``fd.py``) replace ``KINDS`` and override these hooks:

        prepare_round(ctx, number)          once per round, before messages go out
        round_message(ctx, number, client)  the message to one selected client
        accept(msg) -> (stored, samples)    validate an upload (raise ProtocolError to reject)
        conclude_round(ctx, rnd, ok)        aggregate if ok, then `_submit_eval` (or `_after_eval`)
        record_extra(ctx, rnd)              protocol metrics, before the standard ones
        checkpoint_tensors()                what ctx.checkpoint stores and resume= gives back
    """

    KINDS: ClassVar[Kinds] = kinds.FL_KINDS

    def __init__(self, node_id: str, params: Params, settings: ServerSettings, eval_task_factory,
                 resume: tuple[int, Params] | None = None, selector: Selector | None = None):
        super().__init__(node_id)
        self.settings = settings
        self.selector = selector if selector is not None else RandomSelector()
        self.params = params
        self.make_eval_task = eval_task_factory  # params -> task
        self.aggregate = AGGREGATORS.get(settings.aggregator)
        self.roster: set[str] = set()
        self.round: _Round | None = None
        self.completed_round = resume[0] if resume else 0
        if resume:
            self.params = resume[1]
        self.started = False
        self.eval_task_id: int | None = None
        self._rx_mark = self._tx_mark = 0

    # ----- events -------------------------------------------------------------------------
    def on_start(self, ctx: Context) -> None:
        """Start, or restart after a crash: a round in flight is abandoned, the next one starts
        when enough clients (re)join or at the join timeout; the model is the last aggregated one."""
        self.round, self.started, self.eval_task_id = None, False, None
        ctx.set_timer("join_timeout", self.settings.join_timeout_s)
        if self.completed_round >= self.settings.rounds:
            self._finish(ctx, "already complete")

    def on_message(self, ctx: Context, src: str, msg: Message) -> None:
        if msg.kind == self.KINDS.join:
            self._on_join(ctx, src, msg)
        elif msg.kind == self.KINDS.upload:
            self._on_update(ctx, src, msg)
        else:
            ctx.log(f"ignored message of kind {msg.kind!r} from {src}", level="warning")

    def on_timer(self, ctx: Context, name: str) -> None:
        if name == "join_timeout" and not self.started and self.roster:
            self._begin_round(ctx)
        elif name == "join_timeout" and not self.started:
            ctx.set_timer("join_timeout", self.settings.join_timeout_s)
        elif name == "deadline" and self.round is not None:
            self._close_round(ctx)

    def on_task_done(self, ctx: Context, task_id: int, result) -> None:
        if task_id == self.eval_task_id:
            self._after_eval(ctx, result)

    # ----- joins and updates --------------------------------------------------------------
    def _on_join(self, ctx: Context, src: str, msg: Message) -> None:
        self.roster.add(src)
        if msg.meta:
            self.selector.telemetry(src, msg.meta)
        if not self.started and len(self.roster) >= self.settings.min_clients:
            self._begin_round(ctx)

    def _on_update(self, ctx: Context, src: str, msg: Message) -> None:
        rnd = self.round
        if rnd is None or msg.meta.get("round") != rnd.number or src not in rnd.selected or src in rnd.updates:
            ctx.log(f"late or unexpected update from {src} (round {msg.meta.get('round')})")
            return
        try:
            rnd.updates[src], num_samples = self.accept(msg)
        except ProtocolError as err:
            rnd.rejected += 1
            ctx.log(f"rejected update from {src}: {err}", level="warning")
            return
        rnd.feedback[src] = ClientFeedback(ctx.now - rnd.started_at, num_samples, _finite(msg.meta.get("loss")),
                                           _finite(msg.meta.get("sq_loss")))
        if len(rnd.updates) == len(rnd.selected):
            self._close_round(ctx)

    # ----- round control ------------------------------------------------------------------
    def _begin_round(self, ctx: Context) -> None:
        self.started = True
        ctx.cancel_timer("join_timeout")
        number = self.completed_round + 1
        selected = self._select(ctx)
        self.round = _Round(number, selected, {}, ctx.now, self._tx_mark, self._rx_mark)
        self.prepare_round(ctx, number)
        for client in selected:
            ctx.send(client, self.round_message(ctx, number, client))
        ctx.set_timer("deadline", self.settings.round_deadline_s)

    def _select(self, ctx: Context) -> list[str]:
        roster = sorted(self.roster)
        k = self.settings.clients_per_round or max(1, math.ceil(self.settings.fraction * len(roster)))
        return self.selector.select(roster, min(k, len(roster)), ctx.now, ctx.rng)

    # ----- hooks (FedAvg / FedProx here; see the class docstring) ------------------------------
    def prepare_round(self, ctx: Context, number: int) -> None:
        """Per-round state shared by every client's message (DS-FL: draw the open subset)."""

    def round_message(self, ctx: Context, number: int, client: str) -> Message:
        s = self.settings
        meta = dict(round=number, epochs=s.epochs, batch_size=s.batch_size, lr=s.lr, momentum=s.momentum,
                    weight_decay=s.weight_decay, prox_mu=s.prox_mu, seed=int(ctx.rng.integers(2**31)))
        return Message(self.KINDS.round, meta, self.params)

    def accept(self, msg: Message) -> tuple[Any, int]:
        """A validated upload: (what the round keeps, its sample count); ProtocolError rejects it."""
        check_update(self.params, msg.tensors)
        num_samples = _positive_int(msg.meta.get("num_samples"))
        return (msg.tensors, num_samples), num_samples

    def conclude_round(self, ctx: Context, rnd: _Round, ok: bool) -> None:
        if ok:
            self.params = self.aggregate(list(rnd.updates.values()))
        self._submit_eval(ctx)

    def record_extra(self, ctx: Context, rnd: _Round) -> None:
        """Protocol-specific round metrics, recorded before the standard ones (virtual_time stays last)."""

    def checkpoint_tensors(self) -> Params:
        return self.params

    # ----- closing a round ----------------------------------------------------------------
    def _close_round(self, ctx: Context) -> None:
        ctx.cancel_timer("deadline")
        rnd = self.round
        ok = len(rnd.updates) >= max(1, math.ceil(self.settings.min_completion * len(rnd.selected)))
        if not ok:
            ctx.log(f"round {rnd.number} failed: {len(rnd.updates)}/{len(rnd.selected)} updates", level="warning")
        self._round_ok = ok
        missed = ClientFeedback(None)
        self.selector.feedback(rnd.number, {c: rnd.feedback.get(c, missed) for c in rnd.selected})
        self.conclude_round(ctx, rnd, ok)

    def _submit_eval(self, ctx: Context) -> None:
        self.eval_task_id = ctx.submit(self.make_eval_task(self.params))

    def _after_eval(self, ctx: Context, result) -> None:
        rnd, self.round = self.round, None
        self.record_extra(ctx, rnd)
        self._record_round(ctx, rnd, result)
        self.completed_round = rnd.number
        ctx.checkpoint(rnd.number, self.checkpoint_tensors(), {"round": rnd.number, "virtual_time": ctx.now})
        if self.completed_round >= self.settings.rounds:
            self._finish(ctx, "all rounds done")
        else:
            self._begin_round(ctx)

    def _record_round(self, ctx: Context, rnd: _Round, result) -> None:
        up, down = ctx.rx_bytes - self._rx_mark, ctx.tx_bytes - self._tx_mark
        self._rx_mark, self._tx_mark = ctx.rx_bytes, ctx.tx_bytes
        n = rnd.number
        for key, value in (("accuracy", result.accuracy), ("loss", result.loss), ("bytes_up", up),
                           ("bytes_down", down), ("clients_selected", len(rnd.selected)),
                           ("clients_completed", len(rnd.updates)),
                           ("clients_dropped", len(rnd.selected) - len(rnd.updates)),
                           ("updates_rejected", rnd.rejected), ("round_ok", int(self._round_ok)),
                           ("round_time", ctx.now - rnd.started_at), ("virtual_time", ctx.now)):
            ctx.record(key, float(value), round=n)

    def _finish(self, ctx: Context, reason: str) -> None:
        for client in sorted(self.roster):
            ctx.send(client, Message(self.KINDS.shutdown, {"reason": reason}))
        ctx.stop()


def _finite(value) -> float | None:
    """A peer-reported statistic as a float, or None when it is missing or not a finite number."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _positive_int(value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ProtocolError(f"num_samples must be a positive integer, got {value!r}")
    return value
