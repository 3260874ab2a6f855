"""Tram-FL: one model token travels through the nodes and is refined at each (techniques-nishio.md §3).

Message kinds (ONLY APPEND: the strings are part of the wire protocol between versions):

    node → every node   tram.hello  meta: classes (list[int])       "my label set" (at start and recovery)
    holder → next hop   tram.model  meta: hop, counter, bytes       tensors: the model parameters
    next hop → holder   tram.ack    meta: hop                        "I hold the token of transmission hop"
    last holder → all   tram.done   meta: transmissions              the run is over

Life of the token: the origin (first node) waits until every node announced its classes (or
`hello_timeout_s`), trains `batches_per_hop` minibatches, adds the labels it used to the per-class
counter carried in the token, asks the routing policy for the next node and sends the model (one
transmission). The receiver acks at once; every `eval_every` transmissions it first evaluates the
model it received and records run-level `accuracy`, `transmissions`, `bytes_total` and
`virtual_time` (last). After `transmissions` transmissions the holder announces tram.done and stops.
A next hop that does not ack within `ack_timeout_s` is marked dead (until it says hello again) and
the holder routes around it. A holder that crashes with the token loses it (the run then stalls).

`bytes_total` of an evaluation row is exact for every byte that touched the token since the previous
evaluation (summing the rows gives the run's total, as for the peer-to-peer algorithms): each holder
adds the bytes it sent since it last held the token, the receiver adds the frame size of the token
message itself, and the evaluator starts the count afresh once it has recorded it.
A hop's training is a `HopTrainTask` (run by `meshlearn.learn.hop`). Settings: `TramSettings` (``[tram]``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from meshlearn.errors import ProtocolError, UsageError
from meshlearn.fl import spec
from meshlearn.fl.aggregate import check_update
from meshlearn.learn.params import Params
from meshlearn.learn.tasks import EvalTask, HopTrainResult, HopTrainTask
from meshlearn.node import Context, Node
from meshlearn.registry import Registry
from meshlearn.wire import Message

__all__ = ["HELLO", "MODEL", "ACK", "DONE", "ROUTING", "RouteQuery", "projected_variance", "TramNode", "TramSettings",
           "build_tram", "node_classes", "COUNTER_KEY"]

HELLO, MODEL, ACK, DONE = "tram.hello", "tram.model", "tram.ack", "tram.done"
COUNTER_KEY = "tram.counter"  # the class counter rides in checkpoints beside the parameters


class TramSettings(BaseModel):
    """One model token routed through the nodes; each holder trains a few minibatches and forwards it (``[tram]``).

    Defaults follow research/techniques-nishio.md §3, with the learning rate re-tuned for digits + MLP
    (benchmarks/bench_tram.py).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    routing: Literal["variance", "random", "cycle"] = Field(
        "variance", description="next-hop policy: greedy class balancing, uniform random, fixed ring order")
    transmissions: int = Field(100, ge=1, description="the run stops after this many model transmissions")
    batches_per_hop: int = Field(1, ge=1, description="minibatches the holder trains before forwarding "
                                                      "(spec INTERVAL)")
    batch_size: int = Field(100, ge=1, description="minibatch size (spec BATCHSIZE)")
    lr: float = Field(0.05, gt=0, description="SGD learning rate (spec: 0.005 for a CNN on MNIST; 0.05 suits "
                                              "digits + MLP, see benchmarks/bench_tram.py)")
    momentum: float = Field(0.0, ge=0, lt=1, description="SGD momentum (momentum state does not travel)")
    eval_every: int = Field(20, ge=1, description="evaluate the token's model every this many transmissions")
    ack_timeout_s: float = Field(30.0, gt=0, description="virtual seconds to wait for the next hop's ack "
                                                         "before routing around it")
    hello_timeout_s: float = Field(10.0, gt=0, description="the origin launches the token when every node "
                                                           "announced its classes, or after this long")


# --------------------------------------------------------------------------- routing


@dataclass(frozen=True)
class RouteQuery:
    """What a routing policy may look at; candidates are the live nodes other than `current`."""

    current: str
    candidates: tuple[str, ...]
    order: tuple[str, ...]  # every node, in ring order (the `cycle` policy follows it)
    counter: np.ndarray  # (C,) samples of each class the model has been trained on so far
    classes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)  # announced label sets
    samples_per_hop: int = 100  # batch_size x batches_per_hop


Policy = Callable[[RouteQuery, np.random.Generator], str]
ROUTING: Registry[Policy] = Registry("tram_routing")


def projected_variance(counter: np.ndarray, classes: Sequence[int], samples: int) -> float:
    """Population variance of the counter after `samples` more, spread evenly over `classes`."""
    projected = np.asarray(counter, dtype=np.float64).copy()
    projected[list(classes)] += samples / len(classes)
    return float(projected.var())


@ROUTING.register("random")
def _route_random(q: RouteQuery, rng: np.random.Generator) -> str:
    """Uniform over the candidates."""
    return q.candidates[int(rng.integers(len(q.candidates)))]


@ROUTING.register("cycle")
def _route_cycle(q: RouteQuery, rng: np.random.Generator) -> str:
    """The next candidate after `current` in ring order."""
    start = q.order.index(q.current)
    ring = q.order[start + 1:] + q.order[:start]
    return next(n for n in ring if n in q.candidates)


@ROUTING.register("variance")
def _route_variance(q: RouteQuery, rng: np.random.Generator) -> str:
    """Greedy class balancing: the candidate whose projected counter has the least variance (ties at
    random); candidates that have not announced their classes are skipped (all unknown: random)."""
    known = [c for c in q.candidates if q.classes.get(c)]
    if not known:
        return _route_random(q, rng)
    scores = np.array([projected_variance(q.counter, q.classes[c], q.samples_per_hop) for c in known])
    best = [c for c, v in zip(known, scores) if v <= scores.min() + 1e-9 * max(1.0, scores.min())]
    return best[int(rng.integers(len(best)))] if len(best) > 1 else best[0]


# --------------------------------------------------------------------------- the node


@dataclass
class _Token:
    hop: int  # transmissions so far
    counter: np.ndarray
    bytes: int
    params: Params


class TramNode(Node):
    """A Tram-FL participant; the one holding the token trains it and routes it on."""

    def __init__(self, node_id: str, nodes: Sequence[str], classes: Sequence[int], settings: TramSettings,
                 params: Params, *, num_classes: int, origin: bool = False, start_hop: int = 0,
                 counter: np.ndarray | None = None):
        super().__init__(node_id)
        self.order, self.settings, self.num_classes = tuple(nodes), settings, num_classes
        self.classes: dict[str, tuple[int, ...]] = {node_id: tuple(sorted(int(c) for c in classes))}
        self.policy = ROUTING.get(settings.routing)
        self.template = params  # shapes an incoming model must have
        self.origin_token = None if not origin else _Token(
            start_hop, np.zeros(num_classes, np.int64) if counter is None else counter, 0, params)
        self.token: _Token | None = None
        self.dead: set[str] = set()
        self.awaiting: tuple[str, int] | None = None  # (next hop, bytes of the unacked send)
        self.task_id: int | None = None
        self.phase, self.max_hop, self.finished = "idle", start_hop - 1, False
        self._tx_mark = self._rx_mark = 0

    # ----- events -------------------------------------------------------------------------
    def on_start(self, ctx: Context) -> None:
        """Start, or recover: a token held when crashing is lost (its training task died with it)."""
        self.token = self.awaiting = self.task_id = None
        for n in self.order:
            if n != self.node_id:
                ctx.send(n, Message(HELLO, {"classes": list(self.classes[self.node_id])}))
        if self.origin_token is not None:
            ctx.set_timer("launch", self.settings.hello_timeout_s)

    def on_timer(self, ctx: Context, name: str) -> None:
        if name == "launch":
            self._launch(ctx)
        elif name == "ack" and self.awaiting is not None:
            dst, size = self.awaiting
            ctx.log(f"no ack from {dst} within {self.settings.ack_timeout_s}s; routing around it", level="warning")
            self.dead.add(dst)
            self.token.bytes += size
            self.awaiting = None
            self._forward(ctx)

    def on_message(self, ctx: Context, src: str, msg: Message) -> None:
        size, self._rx_mark = ctx.rx_bytes - self._rx_mark, ctx.rx_bytes
        handler = {HELLO: self._on_hello, MODEL: self._on_model, ACK: self._on_ack, DONE: self._on_done}.get(msg.kind)
        try:
            if handler is None or src not in self.order:
                raise ProtocolError("unknown message kind or sender")
            handler(ctx, src, msg, size)
        except ProtocolError as err:
            ctx.log(f"rejected {msg.kind!r} from {src}: {err}", level="warning")

    def on_task_done(self, ctx: Context, task_id: int, result: Any) -> None:
        if task_id == self.task_id:
            self.task_id = None
            (self._after_eval if self.phase == "eval" else self._after_train)(ctx, result)

    # ----- messages -----------------------------------------------------------------------
    def _on_hello(self, ctx: Context, src: str, msg: Message, size: int) -> None:
        classes = tuple(sorted(_ints(msg.meta, "classes", many=True)))
        if not classes or min(classes) < 0 or max(classes) >= self.num_classes:
            raise ProtocolError(f"bad class set {classes} (classes are 0..{self.num_classes - 1})")
        self.classes[src] = classes
        self.dead.discard(src)
        if self.origin_token is not None and len(self.classes) == len(self.order):
            self._launch(ctx)

    def _on_model(self, ctx: Context, src: str, msg: Message, size: int) -> None:
        hop, carried = _ints(msg.meta, "hop"), _ints(msg.meta, "bytes")
        counter = np.array(_ints(msg.meta, "counter", many=True), dtype=np.int64)
        if counter.shape != (self.num_classes,) or hop <= self.max_hop:
            raise ProtocolError(f"bad or stale token (hop {hop}, counter shape {counter.shape})")
        if self.awaiting is not None and hop > self.token.hop + 1:  # our send arrived: an implicit ack
            self._release(ctx)
        if self.token is not None:  # no ack: the sender routes elsewhere, so no token is lost
            raise ProtocolError(f"already holding a token, not accepting hop {hop}")
        check_update(self.template, msg.tensors)
        ctx.send(src, Message(ACK, {"hop": hop}))
        self.max_hop = hop
        self.token = _Token(hop, counter, carried + size, msg.tensors)
        s = self.settings
        if hop % s.eval_every == 0 or hop >= s.transmissions:
            self._submit(ctx, "eval", EvalTask(params=self.token.params))
        else:
            self._train(ctx)

    def _on_ack(self, ctx: Context, src: str, msg: Message, size: int) -> None:
        if self.awaiting is not None and src == self.awaiting[0] and _ints(msg.meta, "hop") == self.token.hop + 1:
            self._release(ctx)

    def _release(self, ctx: Context) -> None:
        ctx.cancel_timer("ack")
        self.awaiting, self.token, self.phase = None, None, "idle"

    def _on_done(self, ctx: Context, src: str, msg: Message, size: int) -> None:
        self._stop(ctx)

    # ----- holding the token --------------------------------------------------------------
    def _launch(self, ctx: Context) -> None:
        ctx.cancel_timer("launch")
        if self.origin_token is None:
            return
        self.token, self.origin_token = self.origin_token, None
        self.max_hop = self.token.hop
        if self.token.hop >= self.settings.transmissions:
            self._finish(ctx)
        else:
            self._train(ctx)

    def _submit(self, ctx: Context, phase: str, task: Any) -> None:
        self.phase, self.task_id = phase, ctx.submit(task)

    def _train(self, ctx: Context) -> None:
        s = self.settings
        self._submit(ctx, "train", HopTrainTask(client=self.node_id, params=self.token.params,
                                                batches=s.batches_per_hop, batch_size=s.batch_size, lr=s.lr,
                                                momentum=s.momentum, seed=int(ctx.rng.integers(2**31))))

    def _after_train(self, ctx: Context, result: HopTrainResult) -> None:
        self.token.params = result.params
        self.token.counter = self.token.counter + result.label_counts
        self._forward(ctx)

    def _after_eval(self, ctx: Context, result: Any) -> None:
        t = self.token
        t.bytes += ctx.tx_bytes - self._tx_mark
        self._tx_mark = ctx.tx_bytes
        for key, value in (("accuracy", result.accuracy), ("loss", result.loss), ("transmissions", t.hop),
                           ("bytes_total", t.bytes), ("virtual_time", ctx.now)):
            ctx.record(key, float(value), round=t.hop)
        t.bytes = 0  # the next row counts from here
        ctx.checkpoint(t.hop, {**t.params, COUNTER_KEY: t.counter}, {"virtual_time": ctx.now})
        if t.hop >= self.settings.transmissions:
            self._finish(ctx)
        else:
            self._train(ctx)

    def _forward(self, ctx: Context) -> None:
        t, s = self.token, self.settings
        candidates = tuple(n for n in self.order if n != self.node_id and n not in self.dead)
        if not candidates:
            ctx.log("every other node is unreachable; trying them all again", level="warning")
            self.dead.clear()
            candidates = tuple(n for n in self.order if n != self.node_id)
        query = RouteQuery(self.node_id, candidates, self.order, t.counter, self.classes,
                           s.batch_size * s.batches_per_hop)
        dst = self.policy(query, ctx.rng)
        t.bytes += ctx.tx_bytes - self._tx_mark
        meta = {"hop": t.hop + 1, "counter": [int(c) for c in t.counter], "bytes": int(t.bytes)}
        size = ctx.send(dst, Message(MODEL, meta, t.params))
        self._tx_mark = ctx.tx_bytes
        self.awaiting, self.phase = (dst, size), "forward"
        ctx.set_timer("ack", s.ack_timeout_s)

    def _finish(self, ctx: Context) -> None:
        for n in self.order:
            if n != self.node_id:
                ctx.send(n, Message(DONE, {"transmissions": self.token.hop}))
        self._stop(ctx)

    def _stop(self, ctx: Context) -> None:
        self.finished, self.phase = True, "done"
        for name in ("launch", "ack"):
            ctx.cancel_timer(name)
        ctx.stop()


def _ints(meta: dict, key: str, many: bool = False):
    """meta[key] as an int (or, with `many`, a list of ints); ProtocolError when it is anything else."""
    value = meta.get(key)
    ok = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
    if (many and isinstance(value, list) and all(ok(v) for v in value)) or (not many and ok(value)):
        return value
    raise ProtocolError(f"meta {key!r} must be {'a list of ints' if many else 'an int'}, got {value!r}")


# --------------------------------------------------------------------------- spec


def node_classes(workspace: Any, client: str) -> list[int]:
    """The labels present in `client`'s partition (what the node announces)."""
    return sorted(int(c) for c in np.unique(workspace.train.y[workspace.parts[client]]))


def build_tram(setup: spec.Setup) -> spec.Plan:
    """Tram-FL nodes, the first one the origin of the token; every node's stop() ends the run.

    A resumed run (``setup.resume = (transmissions, tensors)``) restarts the token at the origin
    with the checkpointed parameters and class counter.
    """
    ws, ids, settings = setup.workspace, setup.client_ids, setup.settings
    if len(ids) < 2:
        raise UsageError(f"Tram-FL needs at least 2 nodes, got {len(ids)}")
    params, hop, counter = setup.initial_params(), 0, None
    if setup.resume is not None:
        hop, tensors = setup.resume
        tensors = dict(tensors)
        counter = np.asarray(tensors.pop(COUNTER_KEY, np.zeros(ws.train.num_classes)), dtype=np.int64)
        check_update(params, tensors)
        params = tensors
    nodes = [TramNode(c, ids, node_classes(ws, c), settings, params, num_classes=ws.train.num_classes, origin=i == 0,
                      start_hop=hop, counter=counter) for i, c in enumerate(ids)]
    return spec.Plan(nodes, progress=lambda: max(n.max_hop for n in nodes), stop_on=list(ids))


_ALONE = "Tram-FL routes one token through every node"
spec.register(spec.AlgorithmSpec(
    "tram", "one model routed through the nodes, trained a little at each (variance / cycle / random routing)",
    build_tram, section="tram", settings=TramSettings, rounds=lambda c: c.tram.transmissions,
    horizon_s=lambda c: 4.0 * c.tram.transmissions * c.tram.ack_timeout_s, resumable=False, server=False,
    ignores={"fl": "the token's training is set in [tram] (batch_size, lr, batches_per_hop)",
             "network.topology": f"{_ALONE}: any node may send it to any other",
             "network.topology_params": f"{_ALONE}: any node may send it to any other"}))
