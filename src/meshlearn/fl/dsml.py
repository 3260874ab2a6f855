"""Hierarchical FedAvg over a Distributed Skip Mesh List: the FL algorithm ``fl.algorithm = "dsml"``.

Every FL client is a Skip Graph member (join via an introducer, keep-alive, repair); there is
no fixed server. One round:

1. the **root** (the leftmost member of greatest height, see ``overlay/dsml/node.py``) sends the global
   model down to the members that adopted it; each member passes it on to its own adopters;
2. a member that gets the model finds its two parents (FIND walks), adopts its primary parent
   (so the parent knows whom to wait for: this round's adopters, and last round's until
   ``ack_timeout_s`` after its own training ended), and trains on its partition (a task);
3. it sums, in float64, ``num_samples × params`` of its own update and of its children's
   partial sums, and sends the sum, the sample count and the contributing client keys to its
   primary parent when every adopter reported (or at its height's deadline); no ACK in
   ``ack_timeout_s`` → a *copy* goes to the secondary parent. Copies are never merged before
   the root, which takes them largest first and only when their contributors are new, so no
   update is counted twice;
4. the root divides by the total sample count (FedAvg), evaluates, records the round and
   starts the next one.

Joins, leaves and crashes need no operator: parents are re-found every round on the live skip
graph; a member that joined late adopts a parent, which hands it the current model; when no
model arrives for ``watch_s`` (the root died) every member re-finds its place and the new root
starts the next round from the last global model it holds. Unlike ``DsmlNode`` there is no
custody (a parent that dies while holding its children's sums loses them for that round).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from meshlearn.errors import ProtocolError
from meshlearn.fl import spec
from meshlearn.fl.aggregate import check_update
from meshlearn.fl.messages import LocalTraining
from meshlearn.learn.tasks import EvalTask
from meshlearn.node import Context
from meshlearn.overlay.dsml.node import dsml_height
from meshlearn.overlay.skipgraph.node import SkipGraphNode, SkipGraphSettings, random_mvecs
from meshlearn.overlay.skipgraph.packets import ACK, LEFT, RIGHT, Ack, Adopt, Peer
from meshlearn.wire import Message

__all__ = ["DsmlFLSettings", "DsmlFLNode", "member_vectors", "build_dsml_fl"]

MODEL, SUM = "dsml.model", "dsml.sum"
Params = dict[str, np.ndarray]


class DsmlFLSettings(BaseModel):
    """Hierarchical FedAvg over the skip mesh (``[dsml]`` in an experiment file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    level_slot_s: float = Field(5.0, gt=0, description="extra wait per height: a height-h member sends its partial "
                                                       "sum at fl.round_deadline_s + (h+1)·slot after the model "
                                                       "arrived, even if some children are missing")
    ack_timeout_s: float = Field(5.0, gt=0, description="no ACK for a partial sum in this long: copy it to the "
                                                        "secondary parent")
    keepalive_s: float = Field(1.0, gt=0, description="skip graph keep-alive period (failure detection and repair)")
    join_spacing_s: float = Field(0.05, ge=0, description="client i joins the skip graph at i × spacing")
    watch_s: float | None = Field(None, gt=0, description="no model for this long: re-find my place, and start the "
                                                          "next round if I am the root now (default: twice the "
                                                          "longest round)")
    seed_offset: int = Field(0, ge=0, description="added to the run seed for the membership vectors (reshapes the "
                                                  "hierarchy without changing anything else)")


@dataclass(frozen=True)
class _Plan:
    """Per-run constants every member shares."""

    rounds: int
    deadline_s: float
    slot_s: float
    ack_timeout_s: float
    watch_s: float
    first_watch_s: float
    training: LocalTraining


@dataclass
class _Round:
    number: int
    start: float
    finds: dict[int, int] = field(default_factory=dict)
    found: dict[int, Peer | None] = field(default_factory=dict)
    parents: list[Peer] | None = None
    is_root: bool = False
    expected: set[str] = field(default_factory=set)  # last rounds' adopters + this round's
    adopted: set[str] = field(default_factory=set)  # this round's
    reported: set[str] = field(default_factory=set)
    sums: Params | None = None
    samples: int = 0
    keys: set[int] = field(default_factory=set)
    own_done: bool = False
    sent: bool = False
    closed: bool = False
    outs: dict[int, tuple[Message, list[Peer]]] = field(default_factory=dict)
    copies: list[Message] = field(default_factory=list)
    suppressed: int = 0
    probe: bool = False  # opened by the watchdog, not by a model: only looks for my place
    full_wait: bool = False  # a root that just took over waits its whole deadline (its children list is stale)


class DsmlFLNode(SkipGraphNode):
    """An FL client that is also a skip graph member and, when its height says so, an aggregator."""

    def __init__(self, node_id: str, key: int, mvec: int, params: Params, plan: _Plan, *, introducer: str | None,
                 join_delay_s: float, keepalive_s: float):
        super().__init__(node_id, key, mvec, introducer=introducer, join_delay_s=join_delay_s,
                         settings=SkipGraphSettings(keepalive_s=keepalive_s))
        self.params, self.plan, self.height = params, plan, dsml_height(mvec)
        self.model_round = 0  # newest global model held (round it opens)
        self.completed_round = 0  # rounds this member closed as root
        self.adopters: dict[str, int] = {}  # child -> last round it adopted me
        self.rnd: _Round | None = None
        self._train_id = self._eval_id = None
        self._closing: _Round | None = None
        self._probe: _Round | None = None  # a watchdog's look for my place
        self.bytes_up = self.bytes_down = 0  # model traffic this member sent (sums up, models down)
        self.meter: Callable[[], tuple[int, int]] | None = None  # simulation-side: every member's totals
        self._metered = (0, 0)
        self._seq = 0

    # ----- events -------------------------------------------------------------------------
    def on_start(self, ctx: Context) -> None:
        super().on_start(ctx)
        self.rnd, self._probe, self._train_id, self._eval_id = None, None, None, None
        ctx.set_timer("fl.watch", self.plan.first_watch_s + self.join_delay_s)

    def on_timer(self, ctx: Context, name: str) -> None:
        if not self.active:
            return
        if name == "fl.watch":
            self._watch(ctx)
        elif name == "fl.deadline" and self.rnd is not None:
            self._deadline(ctx)
        elif name == "fl.grace" and self.rnd is not None:  # last round's children that did not adopt me: gone
            self.rnd.expected = self.rnd.adopted | self.rnd.reported
            self._maybe_send(ctx)
        elif name.startswith("fl.out"):
            self._out_timeout(ctx, int(name[6:]))
        else:
            super().on_timer(ctx, name)

    def on_message(self, ctx: Context, src: str, msg) -> None:
        if not isinstance(msg, Message):
            super().on_message(ctx, src, msg)
        elif msg.kind == MODEL:
            self._on_model(ctx, src, msg)
        elif msg.kind == SUM:
            self._on_sum(ctx, src, msg)
        else:
            ctx.log(f"ignored {msg.kind!r} from {src}", level="warning")

    def on_task_done(self, ctx: Context, task_id: int, result) -> None:
        if task_id == self._train_id and self.rnd is not None:
            self._train_id = None
            self._own_update(ctx, result)
        elif task_id == self._eval_id and self._closing is not None:
            self._eval_id = None
            self._after_eval(ctx, result)

    # ----- finding my place ---------------------------------------------------------------
    def _watch(self, ctx: Context) -> None:
        """No model for a while, or a neighbour died: find my place; the root (re)starts rounds."""
        ctx.set_timer("fl.watch", self.plan.watch_s)
        if self.joined:
            self._probe = _Round(self.model_round, ctx.now, probe=True)
            self._find_parents(ctx, self._probe)

    def watched(self) -> list[Peer]:
        """My parents are kept alive by the keep-alive too: an orphan re-attaches within seconds."""
        return list(self.rnd.parents or []) if self.rnd is not None else []

    def declare_failed(self, ctx: Context, peer: Peer) -> None:
        """A skip graph neighbour died: once the repair is done, check my parents (the dead one may
        have been the parent that forwards me the model)."""
        super().declare_failed(ctx, peer)
        ctx.set_timer("fl.watch", 3 * self.settings.keepalive_s)

    def _find_parents(self, ctx: Context, r: _Round) -> None:
        reqs = {self.new_req(): side for side in (LEFT, RIGHT)}
        r.finds.update(reqs)
        for req, side in reqs.items():
            self.find(ctx, side, self.height + 1, 0, req=req)

    def on_found(self, ctx: Context, req: int, peer: Peer | None, hops: int, mvec: int | None) -> None:
        r = next((x for x in (self.rnd, self._probe) if x is not None and req in x.finds), None)
        if r is None:
            return
        r.found[r.finds.pop(req)] = peer
        if r.finds:
            return
        parents = [p for p in (r.found.get(LEFT), r.found.get(RIGHT)) if p is not None]
        if not parents:
            top_left = self.left[self.height] if self.height < len(self.left) else None
            parents = [] if top_left is None else [top_left]
        r.parents, r.is_root = parents, not parents
        if r.probe:
            self._probe = None
            cur = self.rnd
            collecting = cur is not None and not cur.closed and not cur.sent and cur.number == self.model_round
            if r.is_root and collecting:  # the root died mid-round: I close this round in its place
                cur.parents, cur.is_root = [], True
            elif r.is_root and self.model_round < self.plan.rounds:
                self._open_round(ctx, self.model_round + 1)  # idle or stalled: the root starts a round
            elif parents:  # a parent ahead of me answers with its model
                self._send(ctx, parents[0], Adopt(self.model_round, self.height))
        elif parents:
            self._send(ctx, parents[0], Adopt(r.number, self.height))
            self._maybe_send(ctx)

    def _on_adopt(self, ctx: Context, src: str, m: Adopt) -> None:
        self.adopters[src] = m.round
        if m.round < self.model_round:  # a late joiner or a stalled branch: hand it the model
            self.bytes_down += ctx.send(src, Message(MODEL, {"round": self.model_round}, self.params))
        elif self.rnd is not None and m.round == self.rnd.number and not self.rnd.sent:
            self.rnd.expected.add(src)
            self.rnd.adopted.add(src)

    # ----- a round ------------------------------------------------------------------------
    def _open_round(self, ctx: Context, number: int) -> None:
        self._on_model(ctx, self.node_id, Message(MODEL, {"round": number}, self.params))
        if self.rnd is not None and self.rnd.number == number and self.completed_round != number - 1:
            self.rnd.full_wait = True

    def _on_model(self, ctx: Context, src: str, msg: Message) -> None:
        number = msg.meta.get("round")
        if not isinstance(number, int) or number <= self.model_round:
            return
        if src != self.node_id:
            try:
                _check(self.params, msg.tensors)
            except ProtocolError as err:
                ctx.log(f"rejected model from {src}: {err}", level="warning")
                return
        self.params, self.model_round = dict(msg.tensors), number
        ctx.set_timer("fl.watch", self.plan.watch_s)
        for child, last in self.adopters.items():
            if last >= number - 2 and child != src:
                self.bytes_down += ctx.send(child, msg)
        if number > self.plan.rounds:
            return
        ctx.cancel_timer("fl.grace")  # the previous round's
        self.rnd = r = _Round(number, ctx.now, expected={c for c, last in self.adopters.items() if last >= number - 1})
        self._find_parents(ctx, r)
        self._train_id = ctx.submit(self.plan.training.task(self.node_id, self.params, int(ctx.rng.integers(2**31))))
        wait = self.plan.deadline_s + (self.height + 1) * self.plan.slot_s
        ctx.set_timer("fl.deadline", wait)

    def _own_update(self, ctx: Context, result) -> None:
        n = int(result.num_samples)
        self._add(ctx, {k: np.asarray(v, np.float64) * n for k, v in result.params.items()}, n, {self.key})
        self.rnd.own_done = True
        ctx.set_timer("fl.grace", self.plan.ack_timeout_s)
        self._maybe_send(ctx)

    def _on_sum(self, ctx: Context, src: str, msg: Message) -> None:
        meta, r = msg.meta, self.rnd
        try:
            number, seq, samples, keys = meta["round"], meta["seq"], meta["samples"], set(meta["keys"])
            _check(self.params, msg.tensors)
        except (KeyError, TypeError, ProtocolError) as err:
            ctx.log(f"rejected partial sum from {src}: {err}", level="warning")
            return
        ctx.send(src, Ack(ACK, number, seq))
        if r is None or number != r.number or r.closed:
            ctx.log(f"late partial sum from {src} for round {number}")
            return
        copy = bool(meta.get("copy")) or not keys.isdisjoint(r.keys)
        if r.is_root and copy:
            r.copies.append(msg)
        elif copy or r.sent:
            self._emit(ctx, dict(msg.tensors), samples, keys, copy=copy)
        else:
            self._add(ctx, {k: np.asarray(v, np.float64) for k, v in msg.tensors.items()}, samples, keys)
            r.reported.add(src)
            self._maybe_send(ctx)

    def _add(self, ctx: Context, sums: Params, samples: int, keys: set[int]) -> None:
        r = self.rnd
        if r.sent:  # after my own send: pass it on by itself
            self._emit(ctx, sums, samples, keys, copy=False)
            return
        r.sums = sums if r.sums is None else {k: r.sums[k] + sums[k] for k in r.sums}
        r.samples += samples
        r.keys |= keys

    def _maybe_send(self, ctx: Context) -> None:
        r = self.rnd
        if r is None or r.sent or r.closed or not r.own_done or r.parents is None or r.full_wait:
            return
        if r.expected <= r.reported:
            self._deadline(ctx)

    def _deadline(self, ctx: Context) -> None:
        r = self.rnd
        ctx.cancel_timer("fl.deadline")
        if r.is_root:
            self._close(ctx, r)
        elif not r.sent and r.parents:
            r.sent = True
            if r.sums is not None:
                self._emit(ctx, r.sums, r.samples, r.keys, copy=False)

    def _emit(self, ctx: Context, sums: Params, samples: int, keys: set[int], *, copy: bool) -> None:
        r = self.rnd
        if not r.parents:
            return
        self._seq += 1
        meta = {"round": r.number, "seq": self._seq, "samples": int(samples), "keys": sorted(keys), "copy": copy}
        msg = Message(SUM, meta, {k: np.asarray(v, np.float32) for k, v in sums.items()})
        self.bytes_up += ctx.send(r.parents[0].node, msg)
        r.outs[self._seq] = (msg, list(r.parents[1:]))
        ctx.set_timer(f"fl.out{self._seq}", self.plan.ack_timeout_s)

    def _on_ack(self, ctx: Context, src: str, m: Ack) -> None:
        if self.rnd is not None and self.rnd.outs.pop(m.seq, None) is not None:
            ctx.cancel_timer(f"fl.out{m.seq}")

    def _out_timeout(self, ctx: Context, seq: int) -> None:
        r = self.rnd
        entry = None if r is None else r.outs.get(seq)
        if entry is None:
            return
        msg, spare = entry
        ctx.set_timer("fl.watch", 3 * self.settings.keepalive_s)  # my parent is gone: re-attach after repair
        if not spare:
            del r.outs[seq]
            ctx.log(f"partial sum {seq} of round {r.number}: no parent answered", level="warning")
            return
        copy = Message(SUM, {**msg.meta, "copy": True}, msg.tensors)
        self.bytes_up += ctx.send(spare[0].node, copy)
        r.outs[seq] = (copy, spare[1:])
        ctx.set_timer(f"fl.out{seq}", self.plan.ack_timeout_s)

    # ----- the root -----------------------------------------------------------------------
    def _close(self, ctx: Context, r: _Round) -> None:
        if r.closed:
            return
        r.closed = True
        for msg in sorted(r.copies, key=lambda m: -len(m.meta["keys"])):
            keys = set(msg.meta["keys"])
            if keys <= r.keys:
                r.suppressed += 1
            elif keys.isdisjoint(r.keys):
                self._add(ctx, {k: np.asarray(v, np.float64) for k, v in msg.tensors.items()}, msg.meta["samples"],
                          keys)
        if r.samples:
            self.params = {k: (v / r.samples).astype(np.float32) for k, v in r.sums.items()}
        self._closing = r
        self._eval_id = ctx.submit(EvalTask(self.params))

    def _after_eval(self, ctx: Context, result) -> None:
        r, self._closing = self._closing, None
        self.completed_round = r.number
        up, down = self._round_bytes()
        for key, value in (("accuracy", result.accuracy), ("loss", result.loss), ("clients_completed", len(r.keys)),
                           ("round_ok", int(r.samples > 0)), ("copies_suppressed", r.suppressed),
                           ("height", self.height), ("bytes_up", up), ("bytes_down", down),
                           ("round_time", ctx.now - r.start), ("virtual_time", ctx.now)):  # virtual_time last
            ctx.record(key, float(value), round=r.number)
        ctx.checkpoint(r.number, self.params, {"round": r.number, "virtual_time": ctx.now})
        if r.number >= self.plan.rounds:
            ctx.stop()
        else:
            self._open_round(ctx, r.number + 1)

    def _round_bytes(self) -> tuple[int, int]:
        """Model bytes the whole mesh sent up / down since the last round (0, 0 without a meter)."""
        if self.meter is None:
            return 0, 0
        (up, down), (up0, down0) = self.meter(), self._metered
        self._metered = (up, down)
        return up - up0, down - down0

    _HANDLERS = {**SkipGraphNode._HANDLERS}


DsmlFLNode._HANDLERS.update({Ack: DsmlFLNode._on_ack, Adopt: DsmlFLNode._on_adopt})


def _check(reference: Params, tensors: Params) -> None:
    check_update(reference, tensors)


# ----- building a run ---------------------------------------------------------------------------
def member_vectors(seed: int, n: int) -> list[int]:
    """The membership vectors of clients 0..n-1 (heights, hence the hierarchy, follow from them)."""
    return random_mvecs(n, np.random.default_rng([seed, 0xD5F1]))


def build_dsml_fl(setup: spec.Setup) -> spec.Plan:
    """One DsmlFLNode per client id; client i joins through client 0 at i × join_spacing_s."""
    settings, ids, f = setup.settings, setup.client_ids, setup.config.fl
    levels = max(2, math.ceil(math.log2(len(ids))) + 4)
    longest = f.round_deadline_s + (levels + 2) * settings.level_slot_s + 2 * settings.ack_timeout_s
    plan = _Plan(rounds=f.rounds, deadline_s=f.round_deadline_s, slot_s=settings.level_slot_s,
                 ack_timeout_s=settings.ack_timeout_s, watch_s=settings.watch_s or 2 * longest,
                 first_watch_s=len(ids) * settings.join_spacing_s + 4 * settings.keepalive_s, training=f.training())
    mvecs, params = member_vectors(setup.config.seed + settings.seed_offset, len(ids)), setup.initial_params()
    nodes = [DsmlFLNode(node_id, i, mvecs[i], params, plan, introducer=None if i == 0 else ids[0],
                        join_delay_s=i * settings.join_spacing_s, keepalive_s=settings.keepalive_s)
             for i, node_id in enumerate(ids)]

    def meter() -> tuple[int, int]:
        return sum(n.bytes_up for n in nodes), sum(n.bytes_down for n in nodes)

    for node in nodes:
        node.meter = meter
    return spec.Plan(nodes, progress=lambda: max(n.completed_round for n in nodes), stop_on=list(ids))


_FLAT = "the skip mesh decides who aggregates"
spec.register(spec.AlgorithmSpec(
    "dsml", "hierarchical FedAvg summed up a Distributed Skip Mesh List of the clients, no fixed server",
    build_dsml_fl, section="dsml", settings=DsmlFLSettings, resumable=False, server=False,
    ignores={"selection": f"{_FLAT}; every live member trains every round",
             "fl.fraction": "every live member trains every round", "fl.clients_per_round": "every live member "
             "trains every round", "fl.min_completion": "a round closes at each height's deadline",
             "network.topology": f"{_FLAT}: members talk along the skip graph",
             "network.topology_params": f"{_FLAT}: members talk along the skip graph"}))
