"""The asyncio runtime: drives the same nodes as the simulator, over real sockets.

It is the simulator's twin (``meshlearn.sim.runtime``): nodes see the same ``Context``, per-node
random streams are spawned from the same ``SeedSequence`` in the same order, and messages are
encoded and framed by the same codecs, so ``tx_bytes``/``rx_bytes`` count the same frames.
What differs is only where events come from: ``loop.time()``, ``loop.call_later``, sockets and a
worker thread instead of virtual time and the network model.

* reliable messages: TCP, one connection per (local node, remote node) pair (``tcp.py``);
* datagrams: UDP, one frame per datagram, one hosted node per endpoint (``udp.py``);
* messages between two nodes hosted in this runtime skip the sockets (delivered on the next
  loop iteration, still encoded, framed-size counted and decoded, as in the simulator);
* tasks: ``executor.submit(task).result()`` runs in one worker thread; the result reaches
  ``on_task_done`` on the loop thread;
* ``run()`` returns once every hosted node called ``ctx.stop()`` (or on timeout), after letting
  the frames still in flight leave.

Errors: what peers send is never fatal (counted in ``stats``, logged, see ``tcp.py``); a
:class:`~meshlearn.errors.PeerError` raised by a node handler is logged and counted as
``peer_errors``; any other exception from a node or a task is a bug: the run shuts down
cleanly and ``run()`` re-raises it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import ssl
import time as _wall
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np

from meshlearn.errors import PeerError, ProtocolError, UsageError
from meshlearn.node import Node
from meshlearn.runtime.executor import Executor
from meshlearn.runtime.tcp import TcpTransport
from meshlearn.runtime.udp import MAX_DATAGRAM_BYTES, UdpEndpoint
from meshlearn.wire import FrameCodec, Message, Packet, TensorCodec, decode_payload, encode_payload

__all__ = ["AsyncioRuntime", "AioContext", "run_nodes", "STAT_KEYS", "MAX_DATAGRAM_BYTES"]

_log = logging.getLogger("meshlearn.runtime")

STAT_KEYS = (
    "frames_rejected_auth",  # bad or missing MAC, or a frame claiming another src than its connection's
    "frames_rejected_malformed",  # bad header, truncated frame, or a message that does not decode
    "frames_oversized",  # header declares more than max_frame_bytes (connection closed)
    "handshakes_rejected",  # valid frame but not a hello for a node hosted here
    "messages_dropped_unreachable",  # no route, connect failed, or connect queue full
    "datagrams_rejected",  # bad MAC, undecodable, or received by a runtime hosting several nodes
    "peer_errors",  # a node handler raised PeerError (it rejected a peer's input)
    "control_bytes",  # handshake frames, both directions, all nodes
)
LINGER_S = 5.0  # at shutdown: longest wait for queued/buffered frames to leave, per stage


class AioContext:
    """The `Context` a node sees inside the asyncio runtime."""

    def __init__(self, rt: "AsyncioRuntime", node_id: str, rng: np.random.Generator):
        self._rt, self.node_id, self.rng = rt, node_id, rng
        self.tx_bytes = 0  # message frames written to sockets (or handed to a co-hosted node)
        self.rx_bytes = 0  # message frames read for this node
        self.control_bytes = 0  # handshake frames of this node's connections

    @property
    def now(self) -> float:
        return self._rt.now

    def send(self, dst: str, msg: Message | Packet, *, reliable: bool = True) -> int:
        return self._rt._send(self.node_id, dst, msg, reliable)

    def set_timer(self, name: str, delay: float) -> None:
        self._rt._set_timer(self.node_id, name, delay)

    def cancel_timer(self, name: str) -> None:
        handle = self._rt._states[self.node_id].timers.pop(name, None)
        if handle is not None:
            handle.cancel()

    def submit(self, task: Any) -> int:
        return self._rt._submit(self.node_id, task)

    def record(self, key: str, value: float, *, round: int | None = None, per_node: bool = False) -> None:
        if self._rt.sink is not None:
            self._rt.sink.log(key, float(value), round=round, node=self.node_id if per_node else None,
                              t_sim=self.now, t_wall=_wall.time())

    def checkpoint(self, round: int, tensors: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        if self._rt.on_checkpoint is not None:
            self._rt.on_checkpoint(self.node_id, round, tensors, meta)

    def log(self, text: str, *, level: str = "info") -> None:
        self._rt.log(self.node_id, level, text)

    def stop(self) -> None:
        self._rt._stop_node(self.node_id)


@dataclass
class _NodeState:
    node: Node
    ctx: AioContext
    stopped: bool = False
    timers: dict[str, asyncio.TimerHandle] = field(default_factory=dict)


class AsyncioRuntime:
    """Hosts nodes in this process and connects them to nodes elsewhere over TCP/UDP (+TLS)."""

    def __init__(
        self,
        *,
        listen: tuple[str, int] | None = None,
        peers: dict[str, tuple[str, int]] | None = None,
        secret: bytes | None = None,
        ssl_server: ssl.SSLContext | None = None,
        ssl_client: ssl.SSLContext | None = None,
        executor: Executor | None = None,
        sink: Any = None,
        on_checkpoint: Callable[[str, int, dict, dict], None] | None = None,
        codec: TensorCodec | None = None,
        max_frame_bytes: int = 64 * 2**20,
        seed: int = 0,
        connect_retry_s: float = 1.0,
        handshake_timeout: float = 10.0,
        start_time: float = 0.0,
    ):
        if ssl_server is not None and listen is None:
            raise UsageError("ssl_server wraps the listener: pass listen=(host, port) too")
        if not (isinstance(connect_retry_s, (int, float)) and connect_retry_s > 0):
            raise UsageError(f"connect_retry_s must be a positive number of seconds, got {connect_retry_s!r}")
        self.listen = None if listen is None else _address("listen", listen)
        self.peers = {str(k): _address(f"peers[{k!r}]", v) for k, v in (peers or {}).items()}  # live: add later
        self.executor, self.sink, self.on_checkpoint = executor, sink, on_checkpoint
        self.codec = codec or TensorCodec()
        self.frames = FrameCodec(secret, max_frame_bytes)
        parser = FrameCodec(secret, 2**40)  # size limits are checked by the transports themselves
        self.max_frame_bytes = max_frame_bytes
        self.tcp = TcpTransport(self, self.frames, parser, self.peers, max_frame_bytes=max_frame_bytes,
                                ssl_server=ssl_server, ssl_client=ssl_client, connect_retry_s=connect_retry_s,
                                handshake_timeout=handshake_timeout)
        self.udp = UdpEndpoint(self, parser, self.peers, self._single_node)
        self.stats: dict[str, int] = dict.fromkeys(STAT_KEYS, 0)
        self.log_lines: collections.deque = collections.deque(maxlen=10_000)  # (t, node, level, text)
        self.address: tuple[str, int] | None = None  # the bound listen address, once started
        self.timed_out = False
        self._seed = np.random.SeedSequence(seed)
        self._states: dict[str, _NodeState] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.start_time = start_time  # ctx.now at start(): a resumed run continues its clock
        self._t0 = 0.0
        self._started = self._ran = self._closing = False
        self._done: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._next_task = 0

    # ----- set-up -------------------------------------------------------------------------
    def add_node(self, node: Node) -> None:
        """Host `node` here; rng streams are spawned in add order, exactly as ``Simulator.add_node``."""
        if self._ran:
            raise UsageError("add nodes before run(); this runtime is already running")
        if node.node_id in self._states:
            raise UsageError(f"node id {node.node_id!r} is used twice; node ids must be unique")
        self.frames.frame_size(node.node_id, 0)  # UsageError unless a valid frame source id
        rng = np.random.default_rng(self._seed.spawn(1)[0])
        self._states[node.node_id] = _NodeState(node, AioContext(self, node.node_id, rng))

    def add_nodes(self, nodes: Iterable[Node]) -> None:
        for node in nodes:
            self.add_node(node)

    def context(self, node_id: str) -> AioContext:
        return self._states[node_id].ctx

    @property
    def now(self) -> float:
        return self.start_time + (0.0 if self._loop is None else self._loop.time() - self._t0)

    # ----- running ------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the listener and UDP endpoint (sets ``address``); ``run()`` calls it if needed."""
        if self._started:
            return
        self._loop = asyncio.get_running_loop()
        self._t0 = self._loop.time()
        self._done = asyncio.Event()
        try:
            if self.listen is not None:
                host, port = self.listen
                self.address = await self.tcp.listen(host, port)
                await self.udp.open(host, self.address[1])  # same port number, UDP
            else:
                await self.udp.open("0.0.0.0", 0)  # ephemeral: lets this side send datagrams
        except BaseException:
            await self.tcp.close(0.0)
            self.udp.close()
            raise
        self._started = True

    async def run(self, timeout: float | None = None) -> bool:
        """Start every node and serve until all hosted nodes stopped; returns False on timeout."""
        if self._ran:
            raise UsageError("a runtime runs once; build a new AsyncioRuntime for another run")
        if not self._states:
            raise UsageError("no nodes to run; call add_node(node) first")
        self._ran = True
        try:
            await self.start()
            for st in self._states.values():
                self._dispatch(st, st.node.on_start)
            self._check_done()
            try:
                await asyncio.wait_for(self._done.wait(), timeout)
            except asyncio.TimeoutError:
                self.timed_out = True
                self.log(None, "warning", f"run timed out after {timeout}s; nodes still running: "
                         f"{[n for n, st in self._states.items() if not st.stopped]}")
        finally:
            await self._shutdown()
        if self._error is not None:
            raise self._error
        return not self.timed_out

    def run_forever(self, timeout: float | None = None) -> bool:
        """Blocking ``run()`` in a fresh event loop (for CLIs); Ctrl-C shuts down cleanly."""
        return asyncio.run(self.run(timeout))

    async def _shutdown(self) -> None:
        self._closing = True  # from here on no handler runs: nodes cannot start new work
        for st in self._states.values():
            for handle in st.timers.values():
                handle.cancel()
            st.timers.clear()
        await self.tcp.close(LINGER_S)
        self.udp.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _dispatch(self, st: _NodeState, handler: Callable, *args: Any) -> None:
        """Call a node handler; PeerError is the peer's fault, anything else ends the run."""
        if st.stopped or self._closing:
            return
        try:
            handler(st.ctx, *args)
        except PeerError as exc:
            self.report("peer_errors", st.ctx.node_id, f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # a bug in a node: fail loudly, but shut the sockets down first
            _log.exception("node %s raised; ending the run", st.ctx.node_id)
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        self._done.set()

    def _stop_node(self, node_id: str) -> None:
        st = self._states[node_id]
        if st.stopped:
            return
        st.stopped = True
        for handle in st.timers.values():
            handle.cancel()
        st.timers.clear()
        self._check_done()

    def _check_done(self) -> None:
        if all(st.stopped for st in self._states.values()):
            self._done.set()

    # ----- messages -----------------------------------------------------------------------
    def _send(self, src: str, dst: str, msg: Message | Packet, reliable: bool) -> int:
        payload = encode_payload(msg, self.codec)
        nbytes = self.frames.frame_size(src, len(payload))
        if not reliable and nbytes > MAX_DATAGRAM_BYTES:
            raise UsageError(f"a datagram frame of {nbytes} bytes exceeds {MAX_DATAGRAM_BYTES}; "
                             "send it reliably or split the tensors (meshlearn.net.packetizer)")
        if dst in self._states:  # co-hosted: no socket, same bytes counted
            self._states[src].ctx.tx_bytes += nbytes
            self._loop.call_soon(self.receive, dst, src, payload, nbytes, "frames_rejected_malformed")
            return nbytes
        frame = self.frames.seal(src, payload)
        return self.tcp.send(src, dst, frame) if reliable else self.udp.send(src, dst, frame)

    def receive(self, local: str, src: str, payload: bytes, nbytes: int, reject_counter: str) -> None:
        """A frame for `local` passed its checks: count it, decode it, deliver it."""
        st = self._states[local]
        if st.stopped:
            return
        st.ctx.rx_bytes += nbytes
        try:
            msg = decode_payload(payload, max_bytes=self.max_frame_bytes)
        except ProtocolError as exc:
            self.report(reject_counter, local, f"dropped an undecodable message from {src!r}: {exc}")
            return
        self._dispatch(st, st.node.on_message, src, msg)

    # ----- timers and tasks ---------------------------------------------------------------
    def _set_timer(self, node_id: str, name: str, delay: float) -> None:
        st = self._states[node_id]
        if st.stopped:
            return
        if not (isinstance(delay, (int, float)) and math.isfinite(delay)):
            raise UsageError(f"timer {name!r}: delay must be a finite number of seconds, got {delay!r}")
        old = st.timers.pop(name, None)
        if old is not None:
            old.cancel()
        st.timers[name] = self._loop.call_later(max(0.0, delay), self._fire_timer, st, name)

    def _fire_timer(self, st: _NodeState, name: str) -> None:
        st.timers.pop(name, None)
        self._dispatch(st, st.node.on_timer, name)

    def _submit(self, node_id: str, task: Any) -> int:
        if self.executor is None:
            raise UsageError("this runtime has no executor; pass executor=InlineExecutor(workspace)")
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="meshlearn-task")
        self._next_task += 1
        task_id, executor = self._next_task, self.executor
        future = self._loop.run_in_executor(self._pool, lambda: executor.submit(task).result())
        future.add_done_callback(lambda f: self._task_done(node_id, task_id, f))
        return task_id

    def _task_done(self, node_id: str, task_id: int, future: asyncio.Future) -> None:
        if future.cancelled() or self._done.is_set():
            return
        if future.exception() is not None:
            self.log(node_id, "error", f"task {task_id} failed: {future.exception()!r}")
            self._fail(future.exception())
            return
        self._dispatch(self._states[node_id], self._states[node_id].node.on_task_done, task_id, future.result())

    # ----- what the transports call (tcp.Host) --------------------------------------------
    def is_hosted(self, node_id: str) -> bool:
        return node_id in self._states

    def _single_node(self) -> str | None:
        return next(iter(self._states)) if len(self._states) == 1 else None

    def written(self, node_id: str, nbytes: int) -> None:
        self._states[node_id].ctx.tx_bytes += nbytes

    def control(self, node_id: str | None, nbytes: int) -> None:
        self.stats["control_bytes"] += nbytes
        if node_id is not None:
            self._states[node_id].ctx.control_bytes += nbytes

    def report(self, counter: str, node_id: str | None, text: str) -> None:
        self.stats[counter] += 1
        self.log(node_id, "warning", text)

    def log(self, node_id: str | None, level: str, text: str) -> None:
        self.log_lines.append((self.now, node_id, level, text))
        lvl = logging.getLevelName(str(level).upper())
        _log.log(lvl if isinstance(lvl, int) else logging.INFO, "[t=%.3f %s] %s", self.now, node_id or "-", text)


def _address(what: str, value: Any) -> tuple[str, int]:
    if not (isinstance(value, (tuple, list)) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], int) and 0 <= value[1] < 65536):
        raise UsageError(f"{what} must be a (host, port) pair like ('127.0.0.1', 7000), got {value!r}")
    return value[0], value[1]


def run_nodes(nodes: Iterable[Node], *, timeout: float | None = None, **options: Any) -> AsyncioRuntime:
    """Host `nodes` in a new ``AsyncioRuntime(**options)``, run until they all stop; returns the runtime."""
    runtime = AsyncioRuntime(**options)
    runtime.add_nodes(nodes)
    runtime.run_forever(timeout)
    return runtime
