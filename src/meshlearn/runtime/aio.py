"""The asyncio runtime: drives the same nodes as the simulator, over real sockets.

It is the simulator's twin (``meshlearn.sim.runtime``): both are thin drivers over
:class:`meshlearn.host.NodeHost`, so nodes see the same context, random streams, timers and
dispatch policy, and messages are encoded and framed by the same codecs, so
``tx_bytes``/``rx_bytes`` count the same frames. What differs is only where events come from:
``loop.time()``, ``loop.call_later``, sockets and a worker thread instead of virtual time and the
network model.

* reliable messages: TCP, one connection per (local node, remote node) pair, each with its own
  session keys from the handshake of ``handshake.py`` (``tcp.py``);
* datagrams: UDP, one frame per datagram, one hosted node per endpoint, replay-stamped (``udp.py``);
* keys: ``secret`` is the shared cluster secret or a :class:`~meshlearn.wire.keys.Keyring`
  (per-node credentials); ``members`` limits which remote ids may connect or send at all;
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
import logging
import ssl
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable

from meshlearn.errors import ProtocolError, UsageError
from meshlearn.host import Executor, NodeHost
from meshlearn.node import Node
from meshlearn.runtime.tcp import WRITE_BUFFER_MAX, TcpTransport
from meshlearn.runtime.udp import MAX_DATAGRAM_BYTES, UdpEndpoint
from meshlearn.wire import FrameCodec, Message, Packet, TensorCodec, decode_payload, encode_payload
from meshlearn.wire.keys import Keyring, node_key

__all__ = ["AsyncioRuntime", "run_nodes", "STAT_KEYS", "MAX_DATAGRAM_BYTES"]

_log = logging.getLogger("meshlearn.runtime")

STAT_KEYS = (
    "frames_rejected_auth",  # bad or missing MAC, or a frame claiming another src than its connection's
    "frames_rejected_malformed",  # bad header, truncated frame, or a message that does not decode
    "frames_oversized",  # header declares more than max_frame_bytes (connection closed)
    "handshakes_rejected",  # not a hello for a node hosted here, a non-member, or no proof of the session key
    "messages_dropped_unreachable",  # no route, connect failed, or connect queue full
    "messages_dropped_backpressure",  # the peer does not read: its socket buffer is full
    "datagrams_rejected",  # bad MAC, undecodable, from a non-member, or received by a runtime hosting several nodes
    "datagrams_replayed",  # authentic but seen before, older than the window, or of an older epoch
    "peer_errors",  # a node handler raised PeerError (it rejected a peer's input)
    "control_bytes",  # handshake frames, both directions, all nodes
)
LINGER_S = 5.0  # at shutdown: longest wait for queued/buffered frames to leave, per stage


class AsyncioRuntime(NodeHost):
    """Hosts nodes in this process and connects them to nodes elsewhere over TCP/UDP (+TLS)."""

    _logger = _log

    def __init__(
        self,
        *,
        listen: tuple[str, int] | None = None,
        peers: dict[str, tuple[str, int]] | None = None,
        secret: bytes | Keyring | None = None,
        members: Iterable[str] | None = None,
        ssl_server: ssl.SSLContext | None = None,
        ssl_client: ssl.SSLContext | None = None,
        executor: Executor | None = None,
        sink: Any = None,
        on_checkpoint: Callable[[str, int, dict, dict], None] | None = None,
        codec: TensorCodec | None = None,
        max_frame_bytes: int = 64 * 2**20,
        seed: int | list[int] = 0,
        connect_retry_s: float = 1.0,
        handshake_timeout: float = 10.0,
        write_buffer_max: int = WRITE_BUFFER_MAX,
        start_time: float = 0.0,
    ):
        if ssl_server is not None and listen is None:
            raise UsageError("ssl_server wraps the listener: pass listen=(host, port) too")
        if not (isinstance(connect_retry_s, (int, float)) and connect_retry_s > 0):
            raise UsageError(f"connect_retry_s must be a positive number of seconds, got {connect_retry_s!r}")
        super().__init__(seed=seed, executor=executor, sink=sink, on_checkpoint=on_checkpoint,
                         stat_keys=STAT_KEYS, log_limit=10_000)
        self.listen = None if listen is None else _address("listen", listen)
        self.peers = {str(k): _address(f"peers[{k!r}]", v) for k, v in (peers or {}).items()}  # live: add later
        self.codec = codec or TensorCodec()
        self.keys = Keyring.of(secret)
        self.members = None if members is None else frozenset(map(str, members))
        default = None if self.keys is None else _default_key(self.keys)
        self.frames = FrameCodec(default, max_frame_bytes)
        parser = FrameCodec(default, 2**40)  # size limits are checked by the transports themselves
        self.max_frame_bytes = max_frame_bytes
        self.tcp = TcpTransport(self, self.frames, parser, self.peers, max_frame_bytes=max_frame_bytes,
                                ssl_server=ssl_server, ssl_client=ssl_client, keys=self.keys, admits=self.admits,
                                connect_retry_s=connect_retry_s, handshake_timeout=handshake_timeout,
                                write_buffer_max=write_buffer_max)
        self.udp = UdpEndpoint(self, parser, self.peers, self._single_node, frames=self.frames, keys=self.keys,
                               admits=self.admits)
        self.address: tuple[str, int] | None = None  # the bound listen address, once started
        self.timed_out = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.start_time = start_time  # ctx.now at start(): a resumed run continues its clock
        self._t0 = 0.0
        self._started = self._ran = False
        self._done: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._pool: ThreadPoolExecutor | None = None

    # ----- set-up -------------------------------------------------------------------------
    def add_node(self, node: Node) -> None:
        """Host `node` here; rng streams are spawned in add order, exactly as ``Simulator.add_node``."""
        if self._ran:
            raise UsageError("add nodes before run(); this runtime is already running")
        self.frames.frame_size(node.node_id, 0)  # UsageError unless a valid frame source id
        if self.keys is not None and not self.keys.speaks_as(node.node_id):
            raise UsageError(f"this runtime's key is the credential of {self.keys.own[0]!r}; it cannot host "
                             f"{node.node_id!r} (issue a key for that id with `meshlearn keys issue`)")
        super().add_node(node)

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
            for node_id in self._states:
                self._start_node(node_id)
            self._check_done()
            try:
                await asyncio.wait_for(self._done.wait(), timeout)
            except asyncio.TimeoutError:
                self.timed_out = True
                self.log(None, "warning", f"run timed out after {timeout}s; nodes still running: "
                         f"{[n for n, st in self._states.items() if st.alive]}")
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
            self._disarm(st)
        await self.tcp.close(LINGER_S)
        self.udp.close()
        self.summarize_suppressed()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _fail(self, node_id: str, exc: Exception) -> None:
        """A bug in a node: fail loudly, but shut the sockets down first (``run()`` re-raises)."""
        _log.exception("node %s raised; ending the run", node_id)
        self._abort(exc)

    def _abort(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        self._done.set()

    def _node_stopped(self, node_id: str) -> None:
        self._check_done()

    def _check_done(self) -> None:
        if not any(st.alive for st in self._states.values()):
            self._done.set()

    # ----- messages -----------------------------------------------------------------------
    def _send(self, src: str, dst: str, msg: Message | Packet, reliable: bool) -> int:
        payload = encode_payload(msg, self.codec)
        nbytes = self.frames.frame_size(src, len(payload), datagram=not reliable)
        if not reliable and nbytes > MAX_DATAGRAM_BYTES:
            raise UsageError(f"a datagram frame of {nbytes} bytes exceeds {MAX_DATAGRAM_BYTES}; "
                             "send it reliably or split the tensors (meshlearn.net.packetizer)")
        if dst in self._states:  # co-hosted: no socket, same bytes counted
            self._states[src].ctx.tx_bytes += nbytes
            self._loop.call_soon(self.receive, dst, src, payload, nbytes, "frames_rejected_malformed")
            return nbytes
        return self.tcp.send(src, dst, payload) if reliable else self.udp.send(src, dst, payload)

    def receive(self, local: str, src: str, payload: bytes, nbytes: int, reject_counter: str) -> None:
        """A frame for `local` passed its checks: count it, decode it, deliver it."""
        st = self._states[local]
        if not st.alive:
            return
        st.ctx.rx_bytes += nbytes
        try:
            msg = decode_payload(payload, max_bytes=self.max_frame_bytes)
        except ProtocolError as exc:
            self.report(reject_counter, local, f"dropped an undecodable message from {src!r}: {exc}")
            return
        self._dispatch(st, st.node.on_message, src, msg)

    # ----- timers and tasks ---------------------------------------------------------------
    def _call_later(self, delay: float, callback: Callable[[Any], None], arg: Any) -> asyncio.TimerHandle:
        return self._loop.call_later(delay, callback, arg)

    def _cancel(self, handle: asyncio.TimerHandle) -> None:
        handle.cancel()

    def _due(self, handle: asyncio.TimerHandle) -> float:
        return self.start_time + handle.when() - self._t0

    def _start_task(self, node_id: str, task_id: int, task: Any) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="meshlearn-task")
        executor = self.executor
        future = self._loop.run_in_executor(self._pool, lambda: executor.submit(task).result())
        future.add_done_callback(lambda f: self._task_done(node_id, task_id, f))

    def _task_done(self, node_id: str, task_id: int, future: asyncio.Future) -> None:
        if future.cancelled() or self._done.is_set():
            return
        if future.exception() is not None:
            self.log(node_id, "error", f"task {task_id} failed: {future.exception()!r}")
            self._abort(future.exception())
            return
        self._task_result(node_id, task_id, future.result())

    # ----- what the transports call (tcp.Host) --------------------------------------------
    def is_hosted(self, node_id: str) -> bool:
        return node_id in self._states

    def admits(self, remote: str) -> bool:
        """Whether ``remote`` may connect or send datagrams (``members``; None admits any key holder)."""
        return self.members is None or remote in self.members

    def _single_node(self) -> str | None:
        return next(iter(self._states)) if len(self._states) == 1 else None

    def written(self, node_id: str, nbytes: int) -> None:
        self._states[node_id].ctx.tx_bytes += nbytes

    def control(self, node_id: str | None, nbytes: int) -> None:
        self.stats["control_bytes"] += nbytes
        if node_id is not None:
            self._states[node_id].ctx.control_bytes += nbytes


def _default_key(keys: Keyring) -> bytes:
    """What frames are sealed with when no per-remote key is given (every socket path gives one);
    for an issuer it is a key no member holds, so a frame sealed with it by mistake is rejected."""
    return keys.shared or (keys.own[1] if keys.own else node_key(keys.issuer, "\x00issuer"))


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
