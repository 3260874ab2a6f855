"""Shared pieces of the asyncio-runtime tests: tiny nodes, a fake workspace, polling."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass

import numpy as np

from meshlearn.node import Node
from meshlearn.runtime.rawpeer import RawPeer  # noqa: F401  (the tests' insider)
from meshlearn.wire import FrameCodec, Message, encode_message

SECRET = b"cluster-secret-for-tests"
LOCAL = "127.0.0.1"


@dataclass
class DoubleTask:
    x: int
    kind: str = "double"


class Doubler:
    """A workspace whose tasks return twice their input."""

    def run(self, task: DoubleTask) -> int:
        return task.x * 2


class Pinger(Node):
    """Sends `count` pings (timer-paced), submits a task, says bye and stops."""

    def __init__(self, node_id: str, peer: str, count: int = 3, reliable: bool = True):
        super().__init__(node_id)
        self.peer, self.count, self.reliable = peer, count, reliable
        self.sent: list[Message] = []
        self.pongs: list[int] = []
        self.timer_fired = self.task_result = None

    def send(self, ctx, msg: Message) -> None:
        if ctx.send(self.peer, msg, reliable=self.reliable):
            self.sent.append(msg)

    def on_start(self, ctx) -> None:
        ctx.set_timer("never", 0.05)
        ctx.set_timer("go", 0.01)
        ctx.cancel_timer("never")

    def on_timer(self, ctx, name: str) -> None:
        assert name == "go"
        self.timer_fired = ctx.now
        self.send(ctx, Message.make("t.ping", {"w": np.arange(4, dtype=np.float32)}, n=0))

    def on_message(self, ctx, src: str, msg: Message) -> None:
        assert src == self.peer and msg.kind == "t.pong"
        self.pongs.append(msg.meta["n"])
        if msg.meta["n"] + 1 < self.count:
            self.send(ctx, Message.make("t.ping", n=msg.meta["n"] + 1))
        else:
            ctx.submit(DoubleTask(21))

    def on_task_done(self, ctx, task_id: int, result) -> None:
        self.task_result = (task_id, result)
        self.send(ctx, Message.make("t.bye"))
        ctx.stop()


class Ponger(Node):
    """Answers each ping with a pong; stops on bye."""

    def __init__(self, node_id: str, reliable: bool = True):
        super().__init__(node_id)
        self.reliable = reliable
        self.sent: list[Message] = []
        self.got: list[tuple[str, Message]] = []

    def on_message(self, ctx, src: str, msg: Message) -> None:
        self.got.append((src, msg))
        if msg.kind == "t.ping":
            reply = Message.make("t.pong", {"x": np.ones(3)}, n=msg.meta["n"])
            if ctx.send(src, reply, reliable=self.reliable):
                self.sent.append(reply)
        elif msg.kind == "t.bye":
            ctx.stop()


class Echo(Node):
    """Echoes every message back to its sender; never stops by itself."""

    def __init__(self, node_id: str):
        super().__init__(node_id)
        self.got: list[tuple[str, Message]] = []

    def on_message(self, ctx, src: str, msg: Message) -> None:
        self.got.append((src, msg))
        ctx.send(src, msg)


def wire_bytes(src: str, msgs: list[Message], secret: bytes | None = SECRET, datagram: bool = False) -> int:
    """What the frames of `msgs` from `src` weigh: the sum of FrameCodec.frame_size."""
    frames = FrameCodec(secret)
    return sum(frames.frame_size(src, len(encode_message(m)), datagram=datagram) for m in msgs)


def stamped(payload: bytes, seq: int, epoch: int = 1 << 40) -> bytes:
    """An authenticated datagram's body: the replay stamp (``runtime/udp.py``), then ``payload``."""
    import struct

    return struct.pack(">QQ", epoch, seq) + payload


async def until(cond, timeout: float = 5.0, what: str = "condition") -> None:
    """Poll `cond()` every 10 ms; fail the test after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def free_port() -> int:
    """A TCP+UDP port number that is free right now (tiny race, fine for loopback tests)."""
    with socket.socket() as s:
        s.bind((LOCAL, 0))
        return s.getsockname()[1]


class Asker(Node):
    """Sends one message to `peer` and stops when anything comes back."""

    def __init__(self, node_id: str, peer: str):
        super().__init__(node_id)
        self.peer, self.answer = peer, None

    def on_start(self, ctx) -> None:
        ctx.send(self.peer, Message.make("t.ask"))

    def on_message(self, ctx, src: str, msg: Message) -> None:
        self.answer = (src, msg)
        ctx.stop()

