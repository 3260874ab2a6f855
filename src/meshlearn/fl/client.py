"""The federated-learning client node: joins, trains on request, replies with its update.

The client keeps no state between rounds beyond the round it is working on, so a crash and
recovery only costs the round in progress. Training runs as a task on the executor.

With ``telemetry`` (e.g. nominal ``flops``, ``up_bps``, ``down_bps``, ``num_samples``) the client
reports its resources in fl.join meta, for resource-aware selectors (FedCS). It is fixed at
construction, so under fluctuating resources it goes stale, as real self-reports do. Updates
carry ``sq_loss`` when the training result has one (Oort's per-sample loss statistic).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Mapping

from meshlearn.fl import messages as kinds
from meshlearn.fl.messages import Kinds, LocalTraining, RoundTag
from meshlearn.node import Context, Node
from meshlearn.wire import Message

__all__ = ["FLClient"]


class FLClient(Node):
    """Trains the global model on local data when the server asks."""

    KINDS: ClassVar[Kinds] = kinds.FL_KINDS  # message kinds; subclasses with another protocol replace them

    def __init__(self, node_id: str, server: str, *, rejoin_s: float = 30.0,
                 telemetry: Mapping[str, Any] | None = None):
        super().__init__(node_id)
        self.server = server
        self.telemetry = dict(telemetry or {})  # fl.join meta; {} reports nothing
        self.rejoin_s = rejoin_s  # re-send fl.join after this long without word from the server
        self.task_id: int | None = None
        self.task_round: int | None = None
        self.finished = False

    def on_start(self, ctx: Context) -> None:
        self.task_id = self.task_round = None
        self._join(ctx)

    def _join(self, ctx: Context) -> None:
        """Announce ourselves; repeated while the server is silent, so a restarted server finds us."""
        ctx.send(self.server, Message(self.KINDS.join, dict(self.telemetry)))
        ctx.set_timer("rejoin", self.rejoin_s)

    def on_timer(self, ctx: Context, name: str) -> None:
        if name == "rejoin" and self.task_id is None:
            self._join(ctx)
        elif name == "rejoin":
            ctx.set_timer("rejoin", self.rejoin_s)

    def on_message(self, ctx: Context, src: str, msg: Message) -> None:
        if src != self.server:
            ctx.log(f"ignored {msg.kind!r} from {src}: not my server", level="warning")
            return
        ctx.set_timer("rejoin", self.rejoin_s)
        if msg.kind == self.KINDS.round:
            self._on_round(ctx, msg)
        elif msg.kind == self.KINDS.shutdown:
            self.finished = True
            ctx.cancel_timer("rejoin")
            ctx.stop()

    def _on_round(self, ctx: Context, msg: Message) -> None:
        """Work for one round (FedAvg: train the received parameters); subclasses swap the protocol.

        A malformed round message raises ProtocolError: the runtime counts it and the client waits on."""
        tag, training = RoundTag.from_meta(msg.meta), LocalTraining.from_meta(msg.meta)
        self.task_round = tag.round
        self.task_id = ctx.submit(training.task(self.node_id, msg.tensors, tag.seed))

    def on_task_done(self, ctx: Context, task_id: int, result) -> None:
        if task_id != self.task_id:
            return
        meta = {"round": self.task_round, "num_samples": int(result.num_samples), "loss": float(result.loss)}
        sq_loss = getattr(result, "sq_loss", None)
        if sq_loss is not None and math.isfinite(sq_loss):
            meta["sq_loss"] = float(sq_loss)
        ctx.send(self.server, Message(self.KINDS.upload, meta, result.params))
        self.task_id = None
