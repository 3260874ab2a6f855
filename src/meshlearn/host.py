"""The node host: the one place that holds nodes inside a runtime, whichever runtime it is.

Rule: everything a node can observe of its runtime apart from time and I/O lives here, so the
simulator (``meshlearn.sim.runtime``) and the asyncio runtime (``meshlearn.runtime.aio``) cannot
drift apart. Both are thin drivers subclassing :class:`NodeHost`. The host holds:

* the node table (``_states``: node id -> ``_NodeState``) and ``add_node`` / ``context`` / ``is_alive``;
* the per-node random streams: ``ctx.rng`` is spawned from one ``numpy.random.SeedSequence(seed)``
  in add order, so the same seed and the same nodes give the same streams in every runtime;
* named timers, with one validation: a delay must be a finite real number of seconds (UsageError
  otherwise), negative delays clamp to 0, re-arming a name replaces it, a stopped or crashed node
  loses all its timers and cannot arm new ones;
* :class:`HostContext`, the one implementation of the ``Context`` protocol (``meshlearn.node``);
* the dispatch policy: a :class:`~meshlearn.errors.PeerError` raised by a node handler is the
  peer's fault: it is logged and counted in ``stats["peer_errors"]`` and the node keeps running;
  any other exception is a bug and goes to the driver's ``_fail`` (the simulator re-raises at
  once; the asyncio runtime shuts its sockets down and re-raises from ``run()``);
* metrics (``sink``), checkpoints, log lines, counters (``stats``) and the optional event trace;
* the cap on log lines a flood can cause: ``report`` (a counted event, e.g. a rejected handshake)
  and the runtime's own ``log`` lines are rate-limited (:mod:`meshlearn.ratelimit`: the first
  ``log_burst`` per counter, or per kind of line, then one summary line per ``log_period_s``
  saying how many more there were); the counters still count every event, and a node's own
  ``ctx.log`` lines are never dropped;
* the :class:`Executor` protocol the host hands tasks to (backends live in ``meshlearn.executors``).

A driver supplies the clock and the I/O by overriding::

    now                                  seconds on the run's clock (a property)
    _send(src, dst, msg, reliable)       put a message on the (simulated or real) wire -> frame bytes
    _start_task(node_id, task_id, task)  run a task; call _task_result(...) when it is done
    _call_later(delay, callback, arg)    schedule callback(arg) -> handle; _cancel(handle); _due(handle)
    _node_stopped(node_id)               a node called ctx.stop()
    _fail(node_id, exc)                  a handler raised a bug (default: re-raise)
"""

from __future__ import annotations

import collections
import logging
import math
import numbers
import re
import time as _wall
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

import numpy as np

from meshlearn.errors import PeerError, UsageError
from meshlearn.node import Node
from meshlearn.ratelimit import RateLimit
from meshlearn.wire import Message, Packet

__all__ = ["NodeHost", "HostContext", "Executor", "Handle"]


class Handle(Protocol):
    """A submitted task; ``result()`` blocks until it is done and returns (or raises) its outcome."""

    def result(self) -> Any: ...


class Executor(Protocol):
    """Where tasks run (implementations: ``meshlearn.executors``); all a runtime asks of one."""

    def submit(self, task: Any) -> Handle: ...

    def flops(self, task: Any) -> float:
        """Modelled FLOPs of `task`; the simulator turns them into virtual time per device."""
        ...

    def close(self) -> None: ...


class HostContext:
    """The `Context` a node sees, in every runtime (see ``meshlearn.node.Context``)."""

    def __init__(self, host: "NodeHost", node_id: str, rng: np.random.Generator):
        self._host, self.node_id, self.rng = host, node_id, rng
        self.tx_bytes = 0  # message frames this node put on the wire (or handed to a co-hosted node)
        self.rx_bytes = 0  # message frames delivered to this node
        self.control_bytes = 0  # handshake frames of this node's connections (sockets only)

    @property
    def now(self) -> float:
        return self._host.now

    def send(self, dst: str, msg: Message | Packet, *, reliable: bool = True) -> int:
        return self._host._send(self.node_id, dst, msg, reliable)

    def set_timer(self, name: str, delay: float) -> None:
        self._host._set_timer(self.node_id, name, delay)

    def cancel_timer(self, name: str) -> None:
        self._host._cancel_timer(self.node_id, name)

    def submit(self, task: Any) -> int:
        return self._host._submit(self.node_id, task)

    def record(self, key: str, value: float, *, round: int | None = None, per_node: bool = False) -> None:
        self._host._record(self.node_id if per_node else None, key, value, round)

    def checkpoint(self, round: int, tensors: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        if self._host.on_checkpoint is not None:
            self._host.on_checkpoint(self.node_id, round, tensors, meta)

    def log(self, text: str, *, level: str = "info") -> None:
        self._host._write_log(self.node_id, level, text)  # a node's own lines are never rate-limited

    def stop(self) -> None:
        self._host._stop_node(self.node_id)


@dataclass(slots=True)
class _NodeState:
    node: Node
    ctx: HostContext
    alive: bool = True  # False once crashed or stopped: nothing is delivered, no handler runs
    epoch: int = 0  # bumped when the node goes down: work of an earlier life is dropped
    timers: dict[str, Any] = field(default_factory=dict)  # name -> the driver's handle


_VARYING = re.compile(r"'[^']*'|\"[^\"]*\"|[0-9]+")  # quoted names and numbers: what differs between lines


def _line_kind(text: str) -> str:
    """What lines of one kind share: the start of the text with names and numbers blanked out."""
    return _VARYING.sub("#", text)[:48]


def _checked_delay(name: str, delay: Any) -> float:
    """A timer delay as seconds >= 0; UsageError unless it is a finite real number."""
    if type(delay) is not float:
        if isinstance(delay, bool) or not isinstance(delay, numbers.Real):
            raise UsageError(f"timer {name!r}: delay must be a finite number of seconds, got {delay!r}")
        delay = float(delay)
    if not math.isfinite(delay):
        raise UsageError(f"timer {name!r}: delay must be a finite number of seconds, got {delay!r}; "
                         "to disarm a timer call ctx.cancel_timer(name)")
    return delay if delay > 0.0 else 0.0


class NodeHost:
    """Node table, rng streams, timers, context and dispatch shared by every runtime (see module doc)."""

    _logger = logging.getLogger("meshlearn.host")  # drivers name their own

    def __init__(self, *, seed: int | list[int] = 0, executor: Executor | None = None, sink: Any = None,
                 on_checkpoint: Callable[[str, int, dict, dict], None] | None = None,
                 stat_keys: Iterable[str] = ("peer_errors",), log_limit: int | None = None, trace: bool = False,
                 log_burst: int = 10, log_period_s: float = 10.0):
        self.executor, self.sink, self.on_checkpoint = executor, sink, on_checkpoint
        self.stats: dict[str, int] = dict.fromkeys(stat_keys, 0)
        self.log_lines: collections.deque = collections.deque(maxlen=log_limit)  # (t, node, level, text)
        self._report_limit = RateLimit(log_burst, log_period_s)  # keyed on the counter
        self._log_limit = RateLimit(log_burst, log_period_s, max_keys=256)  # keyed on the kind of line
        self.trace: list[tuple] | None = [] if trace else None
        self._seed = np.random.SeedSequence(seed)
        self._states: dict[str, _NodeState] = {}
        self._next_task = 0
        self._closing = False  # set by a driver that is shutting down: no handler runs any more

    # ----- the node table -----------------------------------------------------------------
    def add_node(self, node: Node) -> None:
        """Host `node`; its ``ctx.rng`` is the next stream spawned from the run's seed."""
        if node.node_id in self._states:
            raise UsageError(f"node id {node.node_id!r} is used twice; node ids must be unique")
        rng = np.random.default_rng(self._seed.spawn(1)[0])
        self._states[node.node_id] = _NodeState(node, HostContext(self, node.node_id, rng))

    def add_nodes(self, nodes: Iterable[Node]) -> None:
        for node in nodes:
            self.add_node(node)

    def context(self, node_id: str) -> HostContext:
        return self._states[node_id].ctx

    def is_alive(self, node_id: str) -> bool:
        """False once the node crashed or called ``ctx.stop()`` (until it recovers)."""
        return self._states[node_id].alive

    def timers(self, node_id: str) -> dict[str, float]:
        """The node's armed timers: name -> the time on ``now``'s clock at which each fires."""
        return {name: self._due(handle) for name, handle in self._states[node_id].timers.items()}

    # ----- dispatch -----------------------------------------------------------------------
    def _dispatch(self, st: _NodeState, handler: Callable, *args: Any) -> None:
        """Call a node handler: PeerError is the peer's fault (counted), anything else a bug."""
        if not st.alive or self._closing:
            return
        try:
            handler(st.ctx, *args)
        except PeerError as exc:
            self.report("peer_errors", st.ctx.node_id, f"{type(exc).__name__}: {exc}")
        except Exception as exc:
            self._fail(st.ctx.node_id, exc)

    def _fail(self, node_id: str, exc: Exception) -> None:
        """A node handler raised a bug; this default re-raises it at once."""
        raise exc

    def _start_node(self, node_id: str) -> None:
        st = self._states[node_id]
        self._trace("start", node_id)
        self._dispatch(st, st.node.on_start)

    # ----- going down and coming back -----------------------------------------------------
    def _stop_node(self, node_id: str) -> None:
        self._crash(node_id)
        self._node_stopped(node_id)

    def _node_stopped(self, node_id: str) -> None:
        """Hook: a node called ``ctx.stop()`` (it is already down)."""

    def _crash(self, node_id: str) -> None:
        st = self._states[node_id]
        if not st.alive:
            return
        st.alive, st.epoch = False, st.epoch + 1
        self._disarm(st)

    def _recover(self, node_id: str) -> None:
        st = self._states[node_id]
        if st.alive:
            return
        st.alive = True
        self._dispatch(st, st.node.on_start)

    def _disarm(self, st: _NodeState) -> None:
        for handle in st.timers.values():
            self._cancel(handle)
        st.timers.clear()

    # ----- timers -------------------------------------------------------------------------
    def _set_timer(self, node_id: str, name: str, delay: float) -> None:
        delay = _checked_delay(name, delay)
        st = self._states[node_id]
        if not st.alive:
            return
        old = st.timers.pop(name, None)
        if old is not None:
            self._cancel(old)
        st.timers[name] = self._call_later(delay, self._fire_timer, (st, name))

    def _cancel_timer(self, node_id: str, name: str) -> None:
        handle = self._states[node_id].timers.pop(name, None)
        if handle is not None:
            self._cancel(handle)

    def _fire_timer(self, item: tuple[_NodeState, str]) -> None:
        st, name = item
        st.timers.pop(name, None)
        self._trace("timer", st.ctx.node_id, name)
        self._dispatch(st, st.node.on_timer, name)

    # ----- tasks --------------------------------------------------------------------------
    def _submit(self, node_id: str, task: Any) -> int:
        if self.executor is None:
            raise UsageError(f"this {type(self).__name__} has no executor; pass executor=InlineExecutor(workspace)")
        self._next_task += 1
        self._start_task(node_id, self._next_task, task)
        return self._next_task

    def _task_result(self, node_id: str, task_id: int, result: Any) -> None:
        st = self._states[node_id]
        self._trace("task", node_id, task_id)
        self._dispatch(st, st.node.on_task_done, task_id, result)

    # ----- metrics, logs, counters, trace -------------------------------------------------
    def _record(self, node: str | None, key: str, value: float, round: int | None) -> None:
        if self.sink is not None:
            self.sink.log(key, float(value), round=round, node=node, t_sim=self.now, t_wall=_wall.time())

    def report(self, counter: str, node_id: str | None, text: str) -> None:
        """Count one event in ``stats[counter]`` and log why (a warning; rate-limited per counter)."""
        self.stats[counter] += 1
        admitted = self._report_limit.admit(counter, self.now)
        if admitted is not None:
            note = f"; {self.stats[counter]} in all so far"
            self._write_log(node_id, "warning", text + admitted.suffix(counter, note))

    def summarize_suppressed(self) -> None:
        """One warning per counter whose last reports were held back by the rate limit (at shutdown)."""
        for counter, dropped in sorted(self._report_limit.pending().items(), key=str):
            self._write_log(None, "warning", f"{dropped} more {counter} not logged since the last line about them; "
                                             f"{self.stats.get(counter, 0)} in all")

    def log(self, node_id: str | None, level: str, text: str) -> None:
        """A runtime's log line; lines of one kind (same text but for names and numbers) are rate-limited."""
        admitted = self._log_limit.admit((level, _line_kind(text)), self.now)
        if admitted is not None:
            self._write_log(node_id, level, text + admitted.suffix("such lines"))

    def _write_log(self, node_id: str | None, level: str, text: str) -> None:
        now = self.now
        self.log_lines.append((now, node_id, level, text))
        lvl = logging.getLevelName(str(level).upper())
        self._logger.log(lvl if isinstance(lvl, int) else logging.INFO, "[t=%.3f %s] %s", now, node_id or "-", text)

    def _trace(self, *event: Any) -> None:
        if self.trace is not None:
            self.trace.append((self.now, *event))

    # ----- what a driver provides ---------------------------------------------------------
    @property
    def now(self) -> float:
        raise NotImplementedError

    def _send(self, src: str, dst: str, msg: Message | Packet, reliable: bool) -> int:
        raise NotImplementedError

    def _start_task(self, node_id: str, task_id: int, task: Any) -> None:
        raise NotImplementedError

    def _call_later(self, delay: float, callback: Callable[[Any], None], arg: Any) -> Any:
        raise NotImplementedError

    def _cancel(self, handle: Any) -> None:
        raise NotImplementedError

    def _due(self, handle: Any) -> float:
        raise NotImplementedError
