"""The simulation runtime: drives nodes on virtual time through the network model.

Every message is encoded with the same wire codec and frame sealer as the asyncio runtime, so the
bytes it counts are the bytes a socket would carry. Delivery time and loss come from
`meshlearn.net.Network`; task duration from the executor's FLOP model and the node's device
profile (read at submission from `dynamics.profile_at(node, now)` when a `dynamics` object is given,
by default the network's; static otherwise); crashes, recoveries and partitions from a fault list.
Same seed ⇒ same trace.
"""

from __future__ import annotations

import logging
import math
import time as _wall
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np

from meshlearn.errors import UsageError
from meshlearn.net import Crash, DeviceProfile, Heal, Network, Partition, Recover, compute_time
from meshlearn.net.dynamics import DeviceDynamics
from meshlearn.node import Node
from meshlearn.runtime.executor import Executor
from meshlearn.sim.loop import EventLoop
from meshlearn.wire import FrameCodec, Message, Packet, TensorCodec, decode_message, encode_message

__all__ = ["Simulator", "SimContext", "MemorySink"]

_log = logging.getLogger("meshlearn.sim")


class MemorySink:
    """Keeps metric rows in a list; the default sink and handy in tests."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def log(self, key: str, value: float, *, round=None, node=None, t_sim=None, t_wall=None) -> None:
        self.rows.append(dict(key=key, value=value, round=round, node=node, t_sim=t_sim, t_wall=t_wall))

    def series(self, key: str) -> list[float]:
        return [r["value"] for r in self.rows if r["key"] == key]


@dataclass
class _NodeState:
    node: Node
    ctx: "SimContext"
    alive: bool = True
    epoch: int = 0  # bumped on crash: events of an earlier life are dropped
    timers: dict[str, list] = field(default_factory=dict)


class SimContext:
    """The `Context` a node sees inside the simulator."""

    def __init__(self, sim: "Simulator", node_id: str, rng: np.random.Generator):
        self._sim, self.node_id, self.rng = sim, node_id, rng
        self.tx_bytes = 0
        self.rx_bytes = 0

    @property
    def now(self) -> float:
        return self._sim.loop.now

    def send(self, dst: str, msg: Message | Packet, *, reliable: bool = True) -> int:
        return self._sim._send(self.node_id, dst, msg, reliable)

    def set_timer(self, name: str, delay: float) -> None:
        self._sim._set_timer(self.node_id, name, delay)

    def cancel_timer(self, name: str) -> None:
        handle = self._sim._states[self.node_id].timers.pop(name, None)
        if handle is not None:
            EventLoop.cancel(handle)

    def submit(self, task: Any) -> int:
        return self._sim._submit(self.node_id, task)

    def record(self, key: str, value: float, *, round: int | None = None, per_node: bool = False) -> None:
        self._sim._record(self.node_id if per_node else None, key, value, round)

    def checkpoint(self, round: int, tensors: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        if self._sim.on_checkpoint is not None:
            self._sim.on_checkpoint(self.node_id, round, tensors, meta)

    def log(self, text: str, *, level: str = "info") -> None:
        self._sim.log_lines.append((self._sim.loop.now, self.node_id, level, text))
        _log.log(logging.getLevelName(level.upper()), "[t=%.3f %s] %s", self._sim.loop.now, self.node_id, text)

    def stop(self) -> None:
        self._sim._stop_node(self.node_id)


class Simulator:
    """Discrete-event runtime for a set of nodes on one simulated network."""

    def __init__(
        self,
        network: Network,
        *,
        seed: int = 0,
        executor: Executor | None = None,
        devices: dict[str, DeviceProfile] | None = None,
        codec: TensorCodec | None = None,
        frames: FrameCodec | None = None,
        sink: Any = None,
        on_checkpoint: Callable[[str, int, dict, dict], None] | None = None,
        trace: bool = False,
        stop_on: Iterable[str] | None = None,
        start_time: float = 0.0,
        dynamics: DeviceDynamics | None = None,
    ):
        self.loop = EventLoop()
        self.loop.now = start_time  # a resumed run continues the virtual clock
        self.network, self.executor = network, executor
        self.devices = devices or {}
        self.dynamics = dynamics if dynamics is not None else getattr(network, "dynamics", None)
        self.codec, self.frames = codec or TensorCodec(), frames or FrameCodec(None)
        self.sink = sink if sink is not None else MemorySink()
        self.on_checkpoint = on_checkpoint
        self.trace: list[tuple] | None = [] if trace else None
        self._seed = np.random.SeedSequence(seed)
        self._states: dict[str, _NodeState] = {}
        self._overhead: dict[str, int] = {}
        self._next_task = 0
        self.stop_on = None if stop_on is None else set(stop_on)  # None: any node's stop() ends the run
        self.stopped = False
        self.dropped_messages = 0
        self.log_lines: list[tuple[float, str, str, str]] = []

    # ----- set-up -------------------------------------------------------------------------
    def add_node(self, node: Node) -> None:
        if node.node_id in self._states:
            raise UsageError(f"node id {node.node_id!r} is used twice; node ids must be unique")
        rng = np.random.default_rng(self._seed.spawn(1)[0])
        self._states[node.node_id] = _NodeState(node, SimContext(self, node.node_id, rng))

    def add_nodes(self, nodes: Iterable[Node]) -> None:
        for node in nodes:
            self.add_node(node)

    def schedule_faults(self, events: Iterable[Any]) -> None:
        """Schedule Crash / Recover / Partition / Heal events from `meshlearn.net.faults`."""
        for ev in events:
            self.loop.call_at(ev.time, self._apply_fault, ev)

    def context(self, node_id: str) -> SimContext:
        return self._states[node_id].ctx

    # ----- running ------------------------------------------------------------------------
    def run(self, until: float = math.inf, max_events: int | None = None) -> float:
        """Start every node (first call only) and run; returns the virtual time reached."""
        if not getattr(self, "_started", False):
            self._started = True
            for node_id in self._states:
                self.loop.call_at(self.loop.now, self._start_node, node_id)
        self.loop.run(until=until, max_events=max_events)
        return self.loop.now

    def _start_node(self, node_id: str) -> None:
        st = self._states[node_id]
        self._trace("start", node_id)
        st.node.on_start(st.ctx)

    # ----- messages -----------------------------------------------------------------------
    def _send(self, src: str, dst: str, msg: Message | Packet, reliable: bool) -> int:
        if dst not in self._states:
            return 0
        if isinstance(msg, Packet):  # immutable: the receiver gets the object, sizes are exact
            payload, nbytes = msg, self._frame_overhead(src) + msg.wire_size
        else:
            payload = encode_message(msg, self.codec)
            nbytes = self.frames.frame_size(src, len(payload))
        self._states[src].ctx.tx_bytes += nbytes
        now = self.loop.now
        if reliable:
            tr = self.network.transmit(src, dst, nbytes, now, reliable=True)
            arrival = None if tr is None or not math.isfinite(tr.arrival) else tr.arrival
        else:
            arrival = self.network.datagram_arrival(src, dst, nbytes, now)
        if self.trace is not None:
            self._trace("send", src, dst, msg.kind, nbytes, arrival)
        if arrival is None:
            self.dropped_messages += 1
        else:
            self.loop.call_at(arrival, self._deliver, (src, dst, payload, nbytes))
        return nbytes

    def _frame_overhead(self, src: str) -> int:
        """Frame bytes around a payload from ``src`` (cached: packets are sent by the million)."""
        size = self._overhead.get(src)
        if size is None:
            size = self._overhead[src] = self.frames.frame_size(src, 0)
        return size

    def _deliver(self, item: tuple) -> None:
        src, dst, payload, nbytes = item
        st = self._states[dst]
        if not st.alive:
            self.dropped_messages += 1
            return
        st.ctx.rx_bytes += nbytes
        msg = payload if isinstance(payload, Packet) else decode_message(payload)
        if self.trace is not None:
            self._trace("deliver", dst, src, msg.kind)
        st.node.on_message(st.ctx, src, msg)

    # ----- timers and tasks ---------------------------------------------------------------
    def _set_timer(self, node_id: str, name: str, delay: float) -> None:
        st = self._states[node_id]
        old = st.timers.pop(name, None)
        if old is not None:
            EventLoop.cancel(old)
        st.timers[name] = self.loop.call_later(delay, self._fire_timer, (node_id, name))

    def _fire_timer(self, item: tuple) -> None:
        node_id, name = item
        st = self._states[node_id]
        st.timers.pop(name, None)
        self._trace("timer", node_id, name)
        st.node.on_timer(st.ctx, name)

    def _submit(self, node_id: str, task: Any) -> int:
        if self.executor is None:
            raise UsageError("this simulation has no executor; pass executor=InlineExecutor(workspace)")
        self._next_task += 1
        handle = self.executor.submit(task)
        device = self._device(node_id)
        duration = compute_time(device, self.executor.flops(task)) if device else 0.0
        st = self._states[node_id]
        self.loop.call_later(duration, self._task_done, (node_id, st.epoch, self._next_task, handle))
        return self._next_task

    def _device(self, node_id: str) -> DeviceProfile | None:
        """The node's profile now: fluctuating when `dynamics` covers it, else the static one."""
        if self.dynamics is not None:
            varying = self.dynamics.profile_at(node_id, self.loop.now)
            if varying is not None:
                return varying
        return self.devices.get(node_id)

    def _task_done(self, item: tuple) -> None:
        node_id, epoch, task_id, handle = item
        st = self._states[node_id]
        if not st.alive or st.epoch != epoch:
            return
        self._trace("task", node_id, task_id)
        st.node.on_task_done(st.ctx, task_id, handle.result())

    # ----- faults -------------------------------------------------------------------------
    def _apply_fault(self, ev: Any) -> None:
        self._trace("fault", type(ev).__name__, getattr(ev, "node", None))
        if isinstance(ev, Crash):
            self._crash(ev.node)
        elif isinstance(ev, Recover):
            self._recover(ev.node)
        elif isinstance(ev, Partition):
            self.network.partition(ev.groups)
        elif isinstance(ev, Heal):
            self.network.heal()

    def _crash(self, node_id: str) -> None:
        st = self._states[node_id]
        if not st.alive:
            return
        st.alive, st.epoch = False, st.epoch + 1
        for handle in st.timers.values():
            EventLoop.cancel(handle)
        st.timers.clear()

    def _recover(self, node_id: str) -> None:
        st = self._states[node_id]
        if st.alive:
            return
        st.alive = True
        st.node.on_start(st.ctx)

    def _stop_node(self, node_id: str) -> None:
        """A node declared itself finished; the run ends if it is one of `stop_on`."""
        self._crash(node_id)
        if self.stop_on is None or node_id in self.stop_on:
            self.stopped = True
            self.loop.stop()

    def is_alive(self, node_id: str) -> bool:
        return self._states[node_id].alive

    # ----- metrics and trace --------------------------------------------------------------
    def _record(self, node: str | None, key: str, value: float, round: int | None) -> None:
        self.sink.log(key, float(value), round=round, node=node, t_sim=self.loop.now, t_wall=_wall.time())

    def _trace(self, *event: Any) -> None:
        if self.trace is not None:
            self.trace.append((self.loop.now, *event))
