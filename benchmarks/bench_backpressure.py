"""Server memory when a client that holds the secret never reads its socket (issue 12, item 8).

A server process (an AsyncioRuntime hosting a node that sends a 1 MiB 'model' every 5 ms to every
joined client, ~200 MiB/s offered) and, in this process, an insider that completes the handshake,
joins, and then never reads. The server's RSS is sampled from /proc for ``--seconds``. Two arms in
the same script: the bounded write buffer (``write_buffer_max``, default 64 MiB) and the same run
with the bound lifted (what every release before issue 12 did). Prints JSON.

    python benchmarks/bench_backpressure.py [--seconds 4] [--limit-mib 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import time

import numpy as np

from meshlearn.node import Node
from meshlearn.runtime import AsyncioRuntime
from meshlearn.runtime.rawpeer import RawPeer
from meshlearn.wire import Message, encode_message

SECRET = b"benchmark-secret-of-32-bytes!!!!"


class Flood(Node):
    def __init__(self):
        super().__init__("server")
        self.joined: list[str] = []

    def on_message(self, ctx, src, msg):
        self.joined.append(src)
        ctx.set_timer("send", 0.0)

    def on_timer(self, ctx, name):
        for dst in self.joined:
            ctx.send(dst, Message.make("t.model", {"w": np.ones(2**18, np.float32)}))
        ctx.set_timer("send", 0.005)


def serve(port_out, limit: int, seconds: float, stats_out) -> None:
    async def main():
        rt = AsyncioRuntime(listen=("127.0.0.1", 0), secret=SECRET, write_buffer_max=limit)
        rt.add_node(Flood())
        await rt.start()
        port_out.put(rt.address)
        await rt.run(timeout=seconds + 3)
        stats_out.put(dict(rt.stats))

    asyncio.run(main())


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        line = next(x for x in f if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def arm(limit: int, seconds: float) -> dict:
    ctx = mp.get_context("spawn")
    ports, stats = ctx.Queue(), ctx.Queue()
    proc = ctx.Process(target=serve, args=(ports, limit, seconds, stats))
    proc.start()
    addr = ports.get(timeout=60)

    async def insider():
        peer = await RawPeer.connect(addr, key=SECRET)
        peer.writer.transport.pause_reading()  # holds the secret, never reads
        start = rss_mib(proc.pid)
        peer.send(encode_message(Message.make("t.join")))
        samples = []
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            await asyncio.sleep(0.25)
            samples.append(rss_mib(proc.pid))
        peer.close()
        return start, samples

    start, samples = asyncio.run(insider())
    counters = stats.get(timeout=60)
    proc.join(30)
    return {"rss_start_mib": round(start, 1), "rss_peak_mib": round(max(samples), 1),
            "rss_end_mib": round(samples[-1], 1), "growth_mib": round(max(samples) - start, 1),
            "messages_dropped_backpressure": counters["messages_dropped_backpressure"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--limit-mib", type=int, default=64)
    args = ap.parse_args()
    bounded = arm(args.limit_mib * 2**20, args.seconds)
    unbounded = arm(2**62, args.seconds)
    print(json.dumps({"seconds": args.seconds, "offered_mib_per_s": 200, "limit_mib": args.limit_mib,
                      "bounded": bounded, "unbounded (before issue 12)": unbounded,
                      "growth_ratio_bounded_vs_unbounded": round(bounded["growth_mib"] / unbounded["growth_mib"], 3)},
                     indent=2))


if __name__ == "__main__":
    main()
