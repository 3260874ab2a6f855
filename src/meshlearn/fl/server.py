"""The federated-learning server node (FedAvg / FedProx round control), without I/O.

Round life-cycle:

    wait for `min_clients` joins (or `join_timeout_s`; nobody joined by then: give up and stop)
    → the selector picks k clients (`clients_per_round`, else ⌈fraction · roster⌉), send them the
      global parameters, arm the deadline timer
    → collect updates (wrong round, unknown sender or wrong shape: rejected and logged)
    → all selected replied, or deadline: if ≥ min_completion of them replied, aggregate with the
      ``fl.aggregator`` rule (``meshlearn.fl.aggregate``); otherwise keep the old model (round failed)
    → tell the selector how each selected client did (ClientFeedback)
    → evaluate the global model (a task), record metrics, checkpoint, next round or stop.

Selection is pluggable (`meshlearn.fl.selection`); the default `random` selector makes exactly the
rng draws this server always made. Clients' fl.join meta goes to `selector.telemetry`.

Given the deployment's client ids (`clients=`), the server refuses every message from any other id
with a PeerError (the host counts it in ``peer_errors``): a stranger never joins the roster, so made-up
ids cannot be selected and fail rounds.

FedProx differs from FedAvg only in the clients' proximal term (`prox_mu` in fl.train).
`RoundSettings` is the `[fl]` section of an experiment, taken whole. Resuming: pass
`resume=(round, params)` and the server continues at round + 1.
"""

from __future__ import annotations

import functools
import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from meshlearn.errors import PeerError, ProtocolError
from meshlearn.fl import messages as kinds
from meshlearn.fl.aggregate import AGGREGATORS, check_update
from meshlearn.fl.messages import Kinds, LocalTraining
from meshlearn.fl.selection import ClientFeedback, RandomSelector, Selector
from meshlearn.learn.tasks import EvalTask
from meshlearn.node import Context, Node
from meshlearn.wire import Message

__all__ = ["FLServer", "RoundSettings"]

Params = dict[str, np.ndarray]


class RoundSettings(BaseModel):
    """Round control and local SGD of server-based FL (the ``[fl]`` section of an experiment)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rounds: int = Field(30, ge=1, description="communication rounds")
    fraction: float = Field(1.0, gt=0, le=1, description="share of joined clients selected per round")
    clients_per_round: int | None = Field(None, ge=1, description="fixed k per round (capped at the clients "
                                                                  "joined); unset = ⌈fraction · clients⌉")
    epochs: int = Field(2, ge=1, description="local epochs per round")
    batch_size: int = Field(16, ge=1, description="local minibatch size")
    lr: float = Field(0.05, gt=0, description="client SGD learning rate")
    momentum: float = Field(0.9, ge=0, lt=1, description="client SGD momentum")
    weight_decay: float = Field(0.0, ge=0, description="client SGD weight decay")
    round_deadline_s: float = Field(30.0, gt=0, description="seconds the server waits for updates each round "
                                                            "(also the deadline of deadline-aware selectors)")
    min_completion: float = Field(0.5, gt=0, le=1, description="share of selected clients needed for a round "
                                                              "to count")
    join_timeout_s: float = Field(60.0, gt=0, description="start round 1 after this long even if not all "
                                                          "clients joined; give up if none joined by then")
    aggregator: str = Field("mean", description="how the server combines client parameters: mean (sample-weighted, "
                                                "FedAvg), median (coordinate-wise), trimmed_mean (coordinate-wise, "
                                                "fl.trim cut at each end), norm_clip (weighted mean of updates "
                                                "clipped to fl.clip_norm); the last three resist malicious clients")
    trim: float = Field(0.2, ge=0, lt=0.5, allow_inf_nan=False,
                        description="trimmed_mean: share of clients dropped at each end of every coordinate "
                                    "(0.2 of 20 = the 4 lowest and 4 highest); withstands up to ⌊trim · clients⌋ "
                                    "malicious ones")
    clip_norm: float | None = Field(None, gt=0, allow_inf_nan=False,
                                    description="norm_clip: bound on each update's norm ||w_client − w_global||; "
                                                "unset = the median norm of the round")

    @field_validator("aggregator")
    @classmethod
    def _known_aggregator(cls, value: str) -> str:
        if value not in AGGREGATORS:
            raise ValueError(f"unknown aggregator {value!r} (valid: {', '.join(AGGREGATORS.names())})")
        return value

    @field_validator("trim", "clip_norm")
    @classmethod
    def _read_by_aggregator(cls, value: Any, info: ValidationInfo) -> Any:
        """An option the chosen rule does not take, set to a non-default value, is an error."""
        rule, key = info.data.get("aggregator"), info.field_name
        if rule is None or value == cls.model_fields[key].default or key in _rule_options(rule):
            return value  # (an unknown aggregator is reported on its own)
        readers = [n for n in AGGREGATORS.names() if key in _rule_options(n)]
        raise ValueError(f"set, but fl.aggregator = {rule!r} does not read it ({' / '.join(readers)} does); "
                         "drop it or change fl.aggregator")

    def training(self, prox_mu: float | None = None) -> LocalTraining:
        """The local SGD every selected client runs (``prox_mu``: FedAvg/FedProx's proximal weight)."""
        return LocalTraining(self.epochs, self.batch_size, self.lr, self.momentum, self.weight_decay, prox_mu)

    def aggregation(self) -> Callable[[list[tuple[Params, int]], Params], Params]:
        """The ``fl.aggregator`` rule with its options bound: ``(updates, current) -> params``."""
        accepted = _rule_options(self.aggregator)
        return functools.partial(AGGREGATORS.get(self.aggregator), **{k: getattr(self, k) for k in accepted})


_AGGREGATOR_OPTIONS = ("trim", "clip_norm")  # [fl] keys a rule reads when its signature names them


def _rule_options(name: str) -> list[str]:
    """The ``_AGGREGATOR_OPTIONS`` the aggregation rule ``name`` takes as keywords."""
    parameters = inspect.signature(AGGREGATORS.get(name)).parameters
    return [key for key in _AGGREGATOR_OPTIONS if key in parameters]


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

    def __init__(self, node_id: str, params: Params, settings: RoundSettings, *, min_clients: int = 1,
                 eval_task: Callable[[Params], Any] = EvalTask, resume: tuple[int, Params] | None = None,
                 selector: Selector | None = None, prox_mu: float = 0.0, clients: Iterable[str] | None = None):
        super().__init__(node_id)
        self.settings, self.min_clients, self.prox_mu = settings, min_clients, prox_mu
        self.selector = selector if selector is not None else RandomSelector()
        self.params = params
        self.make_eval_task = eval_task  # params -> task
        self.aggregate = settings.aggregation()  # (updates, current) -> params, from fl.aggregator
        self.clients = None if clients is None else frozenset(clients)  # the deployment's ids; None = anyone
        self.strangers = 0  # messages refused because their sender is not one of `clients`
        self.rounds_failed = 0  # rounds of this process that kept the old model (too few updates)
        self.roster: set[str] = set()
        self.round: _Round | None = None
        self.completed_round = resume[0] if resume else 0
        if resume:
            self.params = resume[1]
        self.started = False
        self.eval_task_id: int | None = None
        self.gave_up: str | None = None  # why the server stopped before finishing its rounds
        self.participation: dict[str, list[int]] = {}  # client -> [rounds selected, updates accepted]
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
        self._check_member(src, msg)
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
            self.gave_up = f"no client joined within fl.join_timeout_s = {self.settings.join_timeout_s:g} s"
            ctx.log(self.gave_up, level="warning")
            self._finish(ctx, self.gave_up)
        elif name == "deadline" and self.round is not None:
            self._close_round(ctx)

    def on_task_done(self, ctx: Context, task_id: int, result) -> None:
        if task_id == self.eval_task_id:
            self._after_eval(ctx, result)

    # ----- joins and updates --------------------------------------------------------------
    def _check_member(self, src: str, msg: Message) -> None:
        """Refuse (PeerError: the host counts it) anything from an id outside the deployment's clients."""
        if self.clients is None or src in self.clients:
            return
        self.strangers += 1
        ids = sorted(self.clients)
        known = f"{ids[0]} … {ids[-1]}" if ids else "none"
        raise PeerError(f"refused {msg.kind!r} from {src!r}: not a client of this deployment ({len(ids)} clients: "
                        f"{known}); it never joins the roster")

    def _on_join(self, ctx: Context, src: str, msg: Message) -> None:
        self.roster.add(src)
        if msg.meta:
            self.selector.telemetry(src, msg.meta)
        if not self.started and len(self.roster) >= self.min_clients:
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
        meta = {"round": number, **self.settings.training(self.prox_mu).to_meta(), "seed": int(ctx.rng.integers(2**31))}
        return Message(self.KINDS.round, meta, self.params)

    def accept(self, msg: Message) -> tuple[Any, int]:
        """A validated upload: (what the round keeps, its sample count); ProtocolError rejects it."""
        check_update(self.params, msg.tensors)
        num_samples = _positive_int(msg.meta.get("num_samples"))
        return (msg.tensors, num_samples), num_samples

    def conclude_round(self, ctx: Context, rnd: _Round, ok: bool) -> None:
        if ok:
            self.params = self.aggregate(list(rnd.updates.values()), self.params)
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
        self.rounds_failed += not ok
        for client in rnd.selected:
            counts = self.participation.setdefault(client, [0, 0])
            counts[0] += 1
            counts[1] += client in rnd.updates
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
