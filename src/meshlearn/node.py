"""The node API: what every participant (FL server, client, peer, overlay member) is written against.

A node is a plain object that reacts to four events, each given a `Context`:

    on_start(ctx)                     the node begins (or recovers after a crash)
    on_message(ctx, src, msg)         a message from node `src` arrived
    on_timer(ctx, name)               a timer set with ctx.set_timer(name, delay) fired
    on_task_done(ctx, task_id, res)   heavy work handed to ctx.submit(task) finished

Rule: a node never reads the clock, sleeps, opens sockets or touches global randomness. Time is
`ctx.now`, randomness is `ctx.rng` (a per-node numpy Generator spawned from the run's root seed),
and all effects go through the context. That is what lets the simulator and the asyncio runtime
run the same node classes unchanged.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from meshlearn.wire import Message, Packet

__all__ = ["Context", "Node", "Task"]


class Task(Protocol):
    """Heavy work (train, evaluate) run by an executor; plain picklable data."""

    kind: str


class Context(Protocol):
    """Everything a node may do; implemented by each runtime."""

    node_id: str
    rng: np.random.Generator

    @property
    def now(self) -> float:
        """Seconds since the run started (virtual in simulation, monotonic in real runs)."""
        ...

    @property
    def tx_bytes(self) -> int:
        """Wire bytes this node has put on the network so far (exact frame bytes)."""
        ...

    @property
    def rx_bytes(self) -> int:
        """Wire bytes delivered to this node so far."""
        ...

    def send(self, dst: str, msg: Message | Packet, *, reliable: bool = True) -> int:
        """Send `msg` to `dst`; returns the frame bytes put on the wire (0 if `dst` is unknown)."""
        ...

    def set_timer(self, name: str, delay: float) -> None:
        """(Re)arm timer `name` to fire `delay` seconds from now; re-arming replaces it."""
        ...

    def cancel_timer(self, name: str) -> None:
        """Disarm timer `name`; a no-op if it is not armed."""
        ...

    def submit(self, task: Task) -> int:
        """Hand `task` to the executor; its result arrives via on_task_done with the returned id."""
        ...

    def record(self, key: str, value: float, *, round: int | None = None, per_node: bool = False) -> None:
        """Log a metric; run-level unless `per_node`, in which case it is tagged with this node."""
        ...

    def checkpoint(self, round: int, tensors: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Persist state after a completed round so an interrupted run can resume there."""
        ...

    def log(self, text: str, *, level: str = "info") -> None:
        """Write a line to the runtime's log (e.g. why a peer's message was rejected)."""
        ...

    def stop(self) -> None:
        """Ask the runtime to end the run (the experiment is complete)."""
        ...


class Node:
    """Base class with no-op handlers; subclasses override what they need."""

    def __init__(self, node_id: str):
        self.node_id = node_id

    def on_start(self, ctx: Context) -> None:
        """Called once when the run starts and again after each recovery from a crash."""

    def on_message(self, ctx: Context, src: str, msg: Message | Packet) -> None:
        """Called for every delivered message."""

    def on_timer(self, ctx: Context, name: str) -> None:
        """Called when timer `name` fires."""

    def on_task_done(self, ctx: Context, task_id: int, result: Any) -> None:
        """Called when a task submitted by this node finishes."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.node_id!r})"
