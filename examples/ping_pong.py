"""Write a node once, run it in the simulator and over real sockets.

    python examples/ping_pong.py

A `Pinger` sends numbered pings and measures round-trip times; a `Ponger` answers. The same two
classes run first on virtual time through a lossy simulated link (datagrams, 20% loss), then
over UDP on loopback with the asyncio runtime.
"""

from __future__ import annotations

import asyncio

import numpy as np

from meshlearn.net import LinkSpec, Network
from meshlearn.node import Node
from meshlearn.runtime import AsyncioRuntime
from meshlearn.sim.runtime import Simulator
from meshlearn.wire import Message


class Pinger(Node):
    def __init__(self, node_id: str, peer: str, count: int = 20):
        super().__init__(node_id)
        self.peer, self.count, self.sent, self.rtts = peer, count, {}, []

    def on_start(self, ctx):
        ctx.set_timer("tick", 0.0)

    def on_timer(self, ctx, name):
        n = len(self.sent)
        if name == "give_up":
            ctx.stop()
        elif n == self.count:
            ctx.set_timer("give_up", 1.0)  # wait a second for stragglers, then finish
        else:
            self.sent[n] = ctx.now
            ctx.send(self.peer, Message("ping", {"n": n}), reliable=False)
            ctx.set_timer("tick", 0.05)

    def on_message(self, ctx, src, msg):
        self.rtts.append(ctx.now - self.sent[msg.meta["n"]])
        ctx.record("rtt", self.rtts[-1])


class Ponger(Node):
    def on_message(self, ctx, src, msg):
        ctx.send(src, Message("pong", msg.meta), reliable=False)
        ctx.set_timer("idle", 2.0)  # finish after two silent seconds

    def on_timer(self, ctx, name):
        ctx.stop()


def simulate() -> Pinger:
    lossy = LinkSpec(latency_s=0.03, jitter_s=0.01, loss={"model": "bernoulli", "p": 0.2})
    sim = Simulator(Network(None, lossy, {}, np.random.SeedSequence(0)), seed=0, stop_on=["a"])
    pinger = Pinger("a", "b")
    sim.add_nodes([pinger, Ponger("b")])
    sim.run(until=60.0)
    return pinger


async def over_udp() -> Pinger:
    server = AsyncioRuntime(listen=("127.0.0.1", 0), secret=b"demo")
    server.add_node(Ponger("b"))
    await server.start()
    client = AsyncioRuntime(listen=("127.0.0.1", 0), peers={"b": server.address}, secret=b"demo")
    pinger = Pinger("a", "b")
    client.add_node(pinger)
    await asyncio.gather(client.run(timeout=10), server.run(timeout=10))
    return pinger


if __name__ == "__main__":
    sim = simulate()
    print(f"simulated: {len(sim.rtts)}/{sim.count} pongs, mean RTT {np.mean(sim.rtts) * 1e3:.1f} ms (virtual)")
    real = asyncio.run(over_udp())
    print(f"real UDP:  {len(real.rtts)}/{real.count} pongs, mean RTT {np.mean(real.rtts) * 1e3:.2f} ms")
