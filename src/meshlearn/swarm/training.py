"""Pipeline training through a swarm (sans-I/O, torch-free): servers own blocks and their optimizers; a
client drives every step through a chain of them and decides when a step is committed.

One step ``s`` (attempt ``a``: a global counter of the client, bumped on every redo), ``M`` micro-batches:

    client ── sw.fwd {s, a, mb, start, end, scale} + x [+ t] ─▶ hop h   runs its blocks with grad, keeps the graph
    client ◀─ sw.act {s, a, mb, end [, loss]} + y ───────────── hop h   (the last hop: the loss, scaled by mb share)
    client ── sw.bwd {s, a, mb, start} [+ g] ─────────────────▶ hop h   backprops, accumulates its blocks' grads
    client ◀─ sw.gin {s, a, mb, start} [+ g] ───────────────── hop h   the input gradient (none at block 0)
    client ── sw.prep {s, a, start, end} ─────────────────────▶ hop h   stages its blocks' gradient
    client ◀─ sw.grads {s, a, start, end} + grads ──────────── hop h
    client ── sw.apply {s, a} + grads of blocks it is no primary of ─▶ every holder of a block
    client ◀─ sw.applied {s, a, digests} ────────────────────── every holder   one Adam step per block, same fp ops
    client ◀─ sw.err {s, a, reason} ─────────────────────────── any server that refuses a message

**Replicas: primary/backup, not averaging.** Each step the chain's server for a block is its primary:
it computes the block's gradient; the client relays it to every other holder of the block (its backups),
and every holder applies the same gradient with the same optimizer (Adam state held beside the block),
so replicas stay bitwise identical (``applied`` carries weight digests; the client counts mismatches)
and any of them can take over at the next step. Averaging replicas over the overlay (gossip, the skip
mesh) would let replicas drift between averages, make the loss depend on the averaging schedule (no
match with single-process training) and a crash would lose the updates not yet averaged. Relaying via
the client doubles the client's traffic for gradients but needs no server-to-server links and makes a
failure's blame exact: a primary whose gradient the client holds can die without harm.

**Commit point.** The step is decided once the client holds every block's gradient (all ``sw.grads``):
from then on it only needs one live holder per block to apply it; a holder dying in the apply phase is
dropped, the step still commits. A chain server dying (timeout, refusal, garbage) *before* that point
makes the client redo the step (a new attempt: the servers drop the older attempt's graphs and
gradients) through a chain of replicas that hold the same weights at step ``s - 1``: only the step's
in-flight micro-batches are recomputed, no applied update is lost, and the loss curve is the one of
single-process training. The step after is sent only when every holder has applied (``sw.applied``):
servers refuse forwards for any step but their next one, and refuse a stale or duplicate apply.

**Bad input.** The client checks what it relays: activations against the boundary's spec (``check``), input
gradients against the activation's shape, losses and gradients for NaN/inf, and each block's gradient
against the names and shapes it had the first time; the server that sent a bad one is banned like a
crashed one (the step redone), so no holder ever refuses an apply over a peer's garbage. Servers refuse
(``sw.err``, counted in ``refused``) what does not fit their state: a span they do not hold, a forward or
apply for another step than their next one (a stale or duplicate commit), a backward with no kept
forward, a message of an attempt older than their newest.

Crashed servers stay banned for the run (a recovered server would first need the blocks' weights and
optimizer state from a replica: not done here).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from meshlearn.node import Context, Node
from meshlearn.swarm.placement import Server
from meshlearn.swarm.routing import route
from meshlearn.swarm.train_tasks import (
    ApplyTask,
    BackwardTask,
    ForwardTask,
    Grads,
    PrepareTask,
    pack_grads,
    unpack_grads,
)
from meshlearn.wire import Message

__all__ = ["ACT", "APPLIED", "APPLY", "BWD", "ERR", "FWD", "GIN", "GRADS", "PREP", "TrainClient", "TrainServer"]

FWD, ACT, BWD, GIN = "sw.fwd", "sw.act", "sw.bwd", "sw.gin"
PREP, GRADS, APPLY, APPLIED, ERR = "sw.prep", "sw.grads", "sw.apply", "sw.applied", "sw.err"
_INTS = ("step", "attempt", "mb", "start", "end")


def _meta(msg: Message, *keys: str) -> dict[str, Any] | None:
    """The int fields ``keys`` of ``msg.meta``, or None if one is missing or not an int."""
    out = {k: msg.meta.get(k) for k in keys}
    ok = all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in out.values())
    return out if ok else None


class TrainServer(Node):
    """Trains blocks ``[start, end)`` for a client: runs its tasks, answers each message or refuses it."""

    def __init__(self, node_id: str, start: int, end: int):
        super().__init__(node_id)
        self.start, self.end = start, end
        self.version = 0  # steps applied here
        self.current = (-1, -1)  # newest (step, attempt) seen
        self.kept: set[tuple[int, int]] = set()  # (mb, start) with a graph waiting for its backward
        self.pending: dict[int, tuple[str, str, dict]] = {}  # task id -> (client, message kind, meta)
        self.served = self.refused = 0

    def on_message(self, ctx: Context, src: str, msg: Message) -> None:
        handler = {FWD: self._fwd, BWD: self._bwd, PREP: self._prep, APPLY: self._apply}.get(msg.kind)
        if handler is None:
            return
        meta = _meta(msg, *self._fields(msg.kind))
        if meta is None:
            self._refuse(ctx, src, {}, f"{msg.kind} needs int fields {self._fields(msg.kind)}")
            return
        problem = self._superseded(meta) or handler(ctx, src, msg, meta)
        if problem:
            self._refuse(ctx, src, meta, problem)

    @staticmethod
    def _fields(kind: str) -> tuple[str, ...]:
        return {FWD: _INTS, BWD: _INTS, PREP: ("step", "attempt", "start", "end")}.get(kind, ("step", "attempt"))

    def _superseded(self, meta: dict) -> str | None:
        tag = (meta["step"], meta["attempt"])
        return f"step {tag[0]} attempt {tag[1]} is older than {self.current} (superseded)" if tag < self.current else None

    def _fwd(self, ctx: Context, src: str, msg: Message, m: dict) -> str | None:
        if not (self.start <= m["start"] < m["end"] <= self.end and "x" in msg.tensors):
            return f"blocks [{m['start']}, {m['end']}) are not hosted here ([{self.start}, {self.end}))"
        if m["step"] != self.version:
            return f"forward for step {m['step']}, but {self.version} steps are applied here"
        scale = msg.meta.get("scale", 1.0)
        task = ForwardTask(self.node_id, m["step"], m["attempt"], m["mb"], m["start"], m["end"], msg.tensors["x"],
                           msg.tensors.get("t"), float(scale) if isinstance(scale, (int, float)) else 1.0)
        self._submit(ctx, task, src, FWD, m)
        return None

    def _bwd(self, ctx: Context, src: str, msg: Message, m: dict) -> str | None:
        if (m["mb"], m["start"]) not in self.kept:
            return (f"backward for an unknown step/micro-batch: step {m['step']} attempt {m['attempt']} "
                    f"micro-batch {m['mb']} at block {m['start']} has no kept forward here")
        self.kept.discard((m["mb"], m["start"]))
        rows = msg.meta.get("rows", 0)
        task = BackwardTask(self.node_id, m["step"], m["attempt"], m["mb"], m["start"], m["end"],
                            rows if isinstance(rows, int) else 0, msg.tensors.get("g"))
        self._submit(ctx, task, src, BWD, m)
        return None

    def _prep(self, ctx: Context, src: str, msg: Message, m: dict) -> str | None:
        if ((m["step"], m["attempt"]) != self.current or not self.start <= m["start"] < m["end"] <= self.end
                or any(s == m["start"] for _, s in self.kept)):
            return f"nothing to prepare for blocks [{m['start']}, {m['end']}) of step {m['step']}"
        self._submit(ctx, PrepareTask(self.node_id, m["step"], m["attempt"], m["start"], m["end"]), src, PREP, m)
        return None

    def _apply(self, ctx: Context, src: str, msg: Message, m: dict) -> str | None:
        if m["step"] < self.version:
            return f"stale or duplicate commit of step {m['step']}: {self.version} steps are applied here"
        if m["step"] > self.version:
            return f"commit of step {m['step']} ahead of this server ({self.version} steps applied)"
        self._submit(ctx, ApplyTask(self.node_id, m["step"], m["attempt"], unpack_grads(msg.tensors)), src, APPLY, m)
        return None

    def _submit(self, ctx: Context, task: Any, src: str, kind: str, meta: dict) -> None:
        """Run a valid message's task; a newer attempt than any before abandons the older one's graphs."""
        if (meta["step"], meta["attempt"]) > self.current:
            self.current, self.kept = (meta["step"], meta["attempt"]), set()
        self.pending[ctx.submit(task)] = (src, kind, meta)

    def on_task_done(self, ctx: Context, task_id: int, result) -> None:
        src, kind, m = self.pending.pop(task_id)
        if result.problem is not None:
            self._refuse(ctx, src, m, result.problem)
            return
        self.served += 1
        tag = {"step": m["step"], "attempt": m["attempt"]}
        if kind == FWD:
            if (m["step"], m["attempt"]) == self.current:
                self.kept.add((m["mb"], m["start"]))
            extra = {} if result.loss is None else {"loss": result.loss}
            tensors = {} if result.y is None else {"y": result.y}
            ctx.send(src, Message.make(ACT, tensors, **tag, mb=m["mb"], end=m["end"], **extra))
        elif kind == BWD:
            ctx.send(src, Message.make(GIN, {} if result.y is None else {"g": result.y}, **tag, mb=m["mb"],
                                       start=m["start"]))
        elif kind == PREP:
            ctx.send(src, Message.make(GRADS, pack_grads(result.grads), **tag, start=m["start"], end=m["end"]))
        else:
            self.version = m["step"] + 1
            digests = {str(b): d for b, d in result.digests.items()}
            ctx.send(src, Message.make(APPLIED, **tag, digests=digests))

    def _refuse(self, ctx: Context, src: str, meta: dict, reason: str) -> None:
        self.refused += 1
        ctx.record("train_refused", 1.0)
        ctx.send(src, Message.make(ERR, step=meta.get("step", -1), attempt=meta.get("attempt", -1), reason=reason))



class TrainClient(Node):
    """Trains on ``batches`` (inputs, targets) through the servers of ``spans`` (id -> ``(start, end)``);
    ``losses[s]`` is step s's loss. Routes each step's chain with :func:`~meshlearn.swarm.routing.route`
    over ``rates`` (default 1.0), ``sites`` (default the client's) and ``latency``."""

    def __init__(self, node_id: str, spans: dict[str, tuple[int, int]], batches: list[tuple[np.ndarray, np.ndarray]],
                 *, micro_batches: int = 1, rates: dict[str, float] | None = None, site: str = "A",
                 sites: dict[str, str] | None = None, latency: Callable[[str, str], float] | None = None,
                 timeout_s: float = 1.0, retry_s: float = 0.5,
                 check: Callable[[int, np.ndarray], str | None] | None = None):
        super().__init__(node_id)
        self.spans, self.blocks = dict(spans), max(end for _, end in spans.values())
        self.view = {s: Server(s, (rates or {}).get(s, 1.0), b - a, (sites or {}).get(s, site))
                     for s, (a, b) in self.spans.items()}
        self.placement = {s: a for s, (a, _) in self.spans.items()}
        self.batches, self.micro_batches, self.site = batches, max(1, int(micro_batches)), site
        self.latency = latency or (lambda a, b: 0.0)
        self.timeout_s, self.retry_s, self.check = timeout_s, retry_s, check
        self.losses: list[float] = []
        self.committed_at: list[float] = []  # ctx.now when each step was committed
        self.step, self.attempt, self.done = 0, 0, False
        self.banned: set[str] = set()
        self.failures: list[dict[str, Any]] = []  # {step, attempt, server, phase, why}
        self.aborted_attempts = self.redone_micro_batches = self.digest_mismatches = 0
        self.digests: dict[str, dict[str, str]] = {}  # server -> block -> weight digest after the last step
        self.grad_shapes: dict[int, dict[str, tuple]] = {}  # block -> name -> (dtype, shape) of its gradient
        self._reset_attempt()

    def _reset_attempt(self) -> None:
        self.phase, self.chain = "idle", []
        self.mbs: list[tuple[np.ndarray, np.ndarray]] = []
        self.mb_loss: dict[int, float] = {}
        self.bwd_done = self.prepped = 0
        self.grads: Grads = {}
        self.holders: set[str] = set()
        self.applied: dict[str, dict[str, str]] = {}
        self.shapes: dict[tuple[int, int], tuple[int, ...]] = {}
        self.outstanding: dict[str, int] = {}
        self.since: dict[str, float] = {}  # server -> when we last heard from it while waiting on it

    def on_start(self, ctx: Context) -> None:
        self._begin(ctx)

    # ------------------------------------------------------------------ a step's attempt
    def _begin(self, ctx: Context) -> None:
        self._reset_attempt()
        ctx.cancel_timer("deadline")
        if self.step >= len(self.batches):
            self.done = True
            ctx.stop()
            return
        live = {s: v for s, v in self.view.items() if s not in self.banned}
        chain = route(self.placement, live, self.blocks, site=self.site, latency=self.latency)
        if not chain:
            ctx.set_timer("retry", self.retry_s)  # some block has no live holder: nothing to do but wait
            return
        self.attempt += 1
        self.phase, self.chain, self.holders = "fwd", chain, set(live)
        x, y = self.batches[self.step]
        parts = np.array_split(np.arange(len(x)), min(self.micro_batches, len(x)))
        self.mbs = [(x[idx], y[idx]) for idx in parts]
        for m, (xm, _) in enumerate(self.mbs):
            self._send_fwd(ctx, m, 0, xm)

    def _tag(self) -> dict[str, int]:
        return {"step": self.step, "attempt": self.attempt}

    def _send_fwd(self, ctx: Context, m: int, h: int, x: np.ndarray) -> None:
        hop, last = self.chain[h], h == len(self.chain) - 1
        tensors = {"x": np.asarray(x), **({"t": np.asarray(self.mbs[m][1])} if last else {})}
        self.shapes[(m, hop.start)] = tuple(np.shape(x))
        scale = len(self.mbs[m][0]) / len(self.batches[self.step][0])
        self._expect(ctx, hop.server, Message.make(FWD, tensors, **self._tag(), mb=m, start=hop.start, end=hop.end,
                                                   scale=scale))

    def _send_bwd(self, ctx: Context, m: int, h: int, g: np.ndarray | None) -> None:
        hop = self.chain[h]
        self._expect(ctx, hop.server, Message.make(BWD, {} if g is None else {"g": g}, **self._tag(), mb=m,
                                                   start=hop.start, end=hop.end, rows=len(self.mbs[m][0])))

    def _prepare(self, ctx: Context) -> None:
        self.phase = "prep"
        for hop in self.chain:
            self._expect(ctx, hop.server, Message.make(PREP, **self._tag(), start=hop.start, end=hop.end))

    def _commit(self, ctx: Context) -> None:
        """The commit point: the client holds every block's gradient; each holder applies it."""
        self.phase = "apply"
        for q in sorted(self.holders):
            a, b = self.spans[q]
            given = {i: self.grads[i] for i in range(a, b) if self._primary(i) != q}
            self._expect(ctx, q, Message.make(APPLY, pack_grads(given), **self._tag()))

    def _primary(self, block: int) -> str:
        return next(h.server for h in self.chain if h.start <= block < h.end)

    def _committed(self, ctx: Context) -> None:
        loss = float(sum(self.mb_loss[m] for m in range(len(self.mbs))))
        self.losses.append(loss)
        self.committed_at.append(ctx.now)
        ctx.record("loss", loss, round=self.step)
        self.digests = dict(self.applied)
        self.digest_mismatches += self._mismatches()
        self.step += 1
        self._begin(ctx)

    def _mismatches(self) -> int:
        """Blocks whose holders report different weights after this step (0 while replicas agree)."""
        seen: dict[str, set[str]] = {}
        for digests in self.applied.values():
            for block, digest in digests.items():
                seen.setdefault(block, set()).add(digest)
        return sum(len(d) > 1 for d in seen.values())

    # ------------------------------------------------------------------ waiting and answers
    def _expect(self, ctx: Context, server: str, msg: Message) -> None:
        ctx.send(server, msg)
        self.outstanding[server] = self.outstanding.get(server, 0) + 1
        self.since.setdefault(server, ctx.now)
        self._arm(ctx)

    def _answered(self, ctx: Context, server: str) -> None:
        left = self.outstanding.pop(server) - 1
        self.since.pop(server)
        if left:
            self.outstanding[server], self.since[server] = left, ctx.now
        self._arm(ctx)

    def _arm(self, ctx: Context) -> None:
        if self.since:
            ctx.set_timer("deadline", max(0.0, min(self.since.values()) + self.timeout_s - ctx.now))
        else:
            ctx.cancel_timer("deadline")

    def on_timer(self, ctx: Context, name: str) -> None:
        if name == "retry":
            self._begin(ctx)
        elif name == "deadline":
            late = sorted(s for s, t in self.since.items() if ctx.now - t >= self.timeout_s - 1e-9)
            if late:
                self._failed(ctx, late[0], f"no answer within {self.timeout_s}s")
            self._arm(ctx)

    def on_message(self, ctx: Context, src: str, msg: Message) -> None:
        if msg.meta.get("step") != self.step or msg.meta.get("attempt") != self.attempt or src not in self.outstanding:
            return  # a late answer of an abandoned attempt, or from a server given up on
        self._answered(ctx, src)
        handler = {ACT: self._on_act, GIN: self._on_gin, GRADS: self._on_grads, APPLIED: self._on_applied}.get(msg.kind)
        if msg.kind == ERR:
            problem = f"refused: {msg.meta.get('reason')}"
        else:
            problem = handler(ctx, src, msg) if handler else f"answered an unexpected {msg.kind}"
        if problem:
            self._failed(ctx, src, problem)

    def _hop(self, src: str, key: str, value: Any) -> int | None:
        return next((h for h, hop in enumerate(self.chain) if hop.server == src and getattr(hop, key) == value), None)

    def _mb(self, msg: Message) -> int | None:
        m = msg.meta.get("mb")
        return m if isinstance(m, int) and 0 <= m < len(self.mbs) else None

    def _on_act(self, ctx: Context, src: str, msg: Message) -> str | None:
        m, h = self._mb(msg), self._hop(src, "end", msg.meta.get("end"))
        if m is None or h is None or self.phase != "fwd":
            return "an activation it was not asked for"
        if h == len(self.chain) - 1:
            loss = msg.meta.get("loss")
            if not isinstance(loss, (int, float)) or not np.isfinite(loss):
                return f"a missing or non-finite loss {loss!r}"
            self.mb_loss[m] = float(loss)
            self._send_bwd(ctx, m, h, None)
            return None
        y = msg.tensors.get("y")
        problem = self._bad_activation(m, self.chain[h].end, y)
        if problem:
            return problem
        self._send_fwd(ctx, m, h + 1, y)
        return None

    def _bad_activation(self, m: int, boundary: int, y: Any) -> str | None:
        if not isinstance(y, np.ndarray) or y.ndim < 1 or len(y) != len(self.mbs[m][0]):
            return f"a malformed activation at block {boundary}"
        return None if self.check is None else self.check(boundary, y)

    def _on_gin(self, ctx: Context, src: str, msg: Message) -> str | None:
        m, h = self._mb(msg), self._hop(src, "start", msg.meta.get("start"))
        if m is None or h is None or self.phase != "fwd":
            return "an input gradient it was not asked for"
        if h == 0:
            self.bwd_done += 1
            if self.bwd_done == len(self.mbs):
                self._prepare(ctx)
            return None
        g = msg.tensors.get("g")
        if not (isinstance(g, np.ndarray) and g.dtype == np.float32 and g.shape == self.shapes[(m, self.chain[h].start)]
                and np.isfinite(g).all()):
            return f"a malformed input gradient at block {self.chain[h].start}"
        self._send_bwd(ctx, m, h - 1, g)
        return None

    def _on_grads(self, ctx: Context, src: str, msg: Message) -> str | None:
        h = self._hop(src, "start", msg.meta.get("start"))
        if h is None or self.phase != "prep" or msg.meta.get("end") != self.chain[h].end:
            return "gradients it was not asked for"
        grads = unpack_grads(msg.tensors)
        if sorted(grads) != list(range(self.chain[h].start, self.chain[h].end)):
            return f"gradients of blocks {sorted(grads)}, not of [{self.chain[h].start}, {self.chain[h].end})"
        problem = self._bad_grads(grads)
        if problem:
            return problem
        self.grads.update(grads)
        self.prepped += 1
        if self.prepped == len(self.chain):
            self._commit(ctx)
        return None

    def _bad_grads(self, grads: Grads) -> str | None:
        """Non-finite values, or names/shapes other than the block's first gradient's (learned on first use),
        are the primary's fault: caught here, before every holder would refuse them."""
        for block, params in grads.items():
            shapes = {name: (getattr(g, "dtype", None), getattr(g, "shape", None)) for name, g in params.items()}
            known = self.grad_shapes.setdefault(block, shapes)
            if shapes != known:
                return f"gradients of block {block} with other names, dtypes or shapes than before"
            if not all(isinstance(g, np.ndarray) and g.dtype.kind == "f" and np.isfinite(g).all()
                       for g in params.values()):
                return f"non-finite gradients for block {block}"
        return None

    def _on_applied(self, ctx: Context, src: str, msg: Message) -> str | None:
        digests = msg.meta.get("digests")
        if self.phase != "apply" or not isinstance(digests, dict):
            return "a malformed apply acknowledgement"
        self.applied[src] = digests
        if set(self.applied) >= self.holders:
            self._committed(ctx)
        return None

    # ------------------------------------------------------------------ failures
    def _failed(self, ctx: Context, server: str, why: str) -> None:
        self.banned.add(server)
        self.outstanding.pop(server, None)
        self.since.pop(server, None)
        self.failures.append({"step": self.step, "attempt": self.attempt, "server": server, "phase": self.phase,
                              "why": why})
        ctx.record("server_failures", 1.0)
        ctx.log(f"step {self.step}: {server} {why}; banned for the run", level="warning")
        in_chain = any(h.server == server for h in self.chain)
        if self.phase in ("fwd", "prep") and in_chain:  # the step's gradient is incomplete: redo the step
            self.aborted_attempts += 1
            self.redone_micro_batches += len(self.mbs)
            self._begin(ctx)
            return
        self.holders.discard(server)  # a backup, or any holder once the client holds the gradient
        self._arm(ctx)
        if self.phase == "apply" and set(self.applied) >= self.holders:
            self._committed(ctx)
