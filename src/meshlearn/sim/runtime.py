"""The simulation runtime: drives nodes on virtual time through the network model.

A thin driver over :class:`meshlearn.host.NodeHost` (node table, rng streams, timers, context,
dispatch): what it adds is where events come from. Time is the virtual clock of an
:class:`~meshlearn.sim.loop.EventLoop`. Every message is encoded with the same wire codec and frame
sealer as the asyncio runtime, so the bytes it counts are the bytes a socket would carry; delivery
time and loss come from `meshlearn.net.Network`; task duration from the executor's FLOP model and
the node's device profile (read at submission from `dynamics.profile_at(node, now)` when a
`dynamics` object is given, by default the network's; static otherwise); crashes, recoveries and
partitions from a fault list. Same seed ⇒ same trace.

A node handler that raises ``PeerError`` is counted in ``stats["peer_errors"]`` and keeps running,
as on sockets; any other exception propagates out of ``run()`` at once.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, Iterable

from meshlearn.host import Executor, NodeHost
from meshlearn.net import Crash, DeviceProfile, Heal, Network, Partition, Recover, compute_time
from meshlearn.net.dynamics import DeviceDynamics
from meshlearn.sim.loop import EventHandle, EventLoop
from meshlearn.wire import FrameCodec, Message, Packet, TensorCodec, decode_message, encode_message

__all__ = ["Simulator", "MemorySink"]


class MemorySink:
    """Keeps metric rows in a list; the default sink and handy in tests."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def log(self, key: str, value: float, *, round=None, node=None, t_sim=None, t_wall=None) -> None:
        self.rows.append(dict(key=key, value=value, round=round, node=node, t_sim=t_sim, t_wall=t_wall))

    def series(self, key: str) -> list[float]:
        return [r["value"] for r in self.rows if r["key"] == key]


class Simulator(NodeHost):
    """Discrete-event runtime for a set of nodes on one simulated network."""

    _logger = logging.getLogger("meshlearn.sim")

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
        super().__init__(seed=seed, executor=executor, sink=sink if sink is not None else MemorySink(),
                         on_checkpoint=on_checkpoint, trace=trace)
        self.loop = EventLoop()
        self.loop.now = start_time  # a resumed run continues the virtual clock
        self.network = network
        self.devices = devices or {}
        self.dynamics = dynamics if dynamics is not None else getattr(network, "dynamics", None)
        self.codec, self.frames = codec or TensorCodec(), frames or FrameCodec(None)
        self.stop_on = None if stop_on is None else set(stop_on)  # None: any node's stop() ends the run
        self.stopped = False
        self.dropped_messages = 0
        self._overhead: dict[tuple[str, bool], int] = {}
        self._started = False

    @property
    def now(self) -> float:
        return self.loop.now

    def schedule_faults(self, events: Iterable[Any]) -> None:
        """Schedule Crash / Recover / Partition / Heal events from `meshlearn.net.faults`."""
        for ev in events:
            self.loop.call_at(ev.time, self._apply_fault, ev)

    # ----- running ------------------------------------------------------------------------
    def run(self, until: float = math.inf, max_events: int | None = None) -> float:
        """Start every node (first call only) and run; returns the virtual time reached."""
        if not self._started:
            self._started = True
            for node_id in self._states:
                self.loop.call_at(self.loop.now, self._start_node, node_id)
        self.loop.run(until=until, max_events=max_events)
        return self.loop.now

    def _node_stopped(self, node_id: str) -> None:
        """A node declared itself finished; the run ends if it is one of `stop_on`."""
        if self.stop_on is None or node_id in self.stop_on:
            self.stopped = True
            self.loop.stop()

    # ----- messages -----------------------------------------------------------------------
    def _send(self, src: str, dst: str, msg: Message | Packet, reliable: bool) -> int:
        if dst not in self._states:
            return 0
        if isinstance(msg, Packet):  # immutable: the receiver gets the object, sizes are exact
            payload, nbytes = msg, self._frame_overhead(src, reliable) + msg.wire_size
        else:
            payload = encode_message(msg, self.codec)
            nbytes = self.frames.frame_size(src, len(payload), datagram=not reliable)
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

    def _frame_overhead(self, src: str, reliable: bool) -> int:
        """Frame bytes around a payload from ``src`` (cached: packets are sent by the million)."""
        size = self._overhead.get((src, reliable))
        if size is None:
            size = self._overhead[(src, reliable)] = self.frames.frame_size(src, 0, datagram=not reliable)
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
        self._dispatch(st, st.node.on_message, src, msg)

    # ----- timers and tasks ---------------------------------------------------------------
    def _call_later(self, delay: float, callback: Callable[[Any], None], arg: Any) -> EventHandle:
        return self.loop.call_later(delay, callback, arg)

    def _cancel(self, handle: EventHandle) -> None:
        EventLoop.cancel(handle)

    def _due(self, handle: EventHandle) -> float:
        return handle[0]

    def _start_task(self, node_id: str, task_id: int, task: Any) -> None:
        handle = self.executor.submit(task)
        device = self._device(node_id)
        duration = compute_time(device, self.executor.flops(task)) if device else 0.0
        epoch = self._states[node_id].epoch
        self.loop.call_later(duration, self._task_done, (node_id, epoch, task_id, handle))

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
        if st.alive and st.epoch == epoch:
            self._task_result(node_id, task_id, handle.result())

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
