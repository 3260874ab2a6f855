"""Real SWIM members over UDP: many members in one OS process, one socket pair each.

A UDP endpoint delivers to exactly one node (``runtime/udp.py``), so every member gets its own
``AsyncioRuntime`` (UDP for probes and gossip, TCP for the push/pull ``Sync``) and all of them
share one asyncio loop. Member ids are their addresses, ``HOST:PORT``; the cluster's address
ranges are given up front (``parse_cluster``), so any member can reach any other.

Events (``join``, ``suspect``, ``dead``, ``alive``, ``refute``, ``left``) are appended as JSON
lines with wall-clock time, so several processes' logs can be merged afterwards.
"""

from __future__ import annotations

import asyncio
import json
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Callable, TextIO

from meshlearn.errors import UsageError
from meshlearn.overlay.swim.config import SwimConfig
from meshlearn.overlay.swim.node import SwimNode
from meshlearn.overlay.swim.packets import ALIVE, DEAD, SUSPECT
from meshlearn.runtime.aio import STAT_KEYS, AsyncioRuntime

__all__ = ["parse_cluster", "runtimes_for", "SwimHost"]


def parse_cluster(ranges: list[str]) -> dict[str, tuple[str, int]]:
    """``["127.0.0.1:7000-7099", "10.0.0.5:7000"]`` -> {"127.0.0.1:7000": ("127.0.0.1", 7000), ...}."""
    book: dict[str, tuple[str, int]] = {}
    for item in ranges:
        host, sep, ports = item.rpartition(":")
        first, dash, last = ports.partition("-")
        try:
            low, high = int(first), int(last) if dash else int(first)
        except ValueError:
            raise UsageError(f"--cluster {item!r} must look like HOST:PORT or HOST:FIRST-LAST") from None
        if not sep or not host or not 0 < low <= high < 65536:
            raise UsageError(f"--cluster {item!r} must look like HOST:PORT or HOST:FIRST-LAST (ports 1-65535)")
        book.update({f"{host}:{port}": (host, port) for port in range(low, high + 1)})
    return book


def runtimes_for(nodes: list, cluster: dict[str, tuple[str, int]], *, secret: bytes | None,
                 seed: int = 0) -> list[AsyncioRuntime]:
    """One runtime per node (a UDP endpoint serves one node), listening on the node's address.

    Each node's random stream is seeded from its address as well as `seed`: seeded by its index in
    this process alone, member i of every ``overlay up`` process would probe in the same order, and
    a dead member would go unprobed for many rounds (issue 15's diagnostic).
    """
    missing = [node.node_id for node in nodes if node.node_id not in cluster]
    if missing:
        raise UsageError(f"{missing[0]!r} is not in the --cluster ranges; list every member's address")
    runtimes = []
    for node in nodes:
        runtime = AsyncioRuntime(listen=cluster[node.node_id], peers=cluster, secret=secret,
                                 seed=[seed, zlib.crc32(node.node_id.encode())])
        runtime.add_node(node)
        runtimes.append(runtime)
    return runtimes


class SwimHost:
    """Hosts ``local`` member ids of a cluster in this process until ``duration`` seconds pass."""

    def __init__(self, local: list[str], cluster: dict[str, tuple[str, int]], *, config: SwimConfig,
                 seeds: list[str], secret: bytes | None, events: TextIO | None = None, seed: int = 0):
        self.events, self.started = events, time.time()
        self.nodes = [SwimNode(node, config, seeds=seeds, on_event=self._event) for node in local]
        self.runtimes = runtimes_for(self.nodes, cluster, secret=secret, seed=seed)

    def _event(self, t: float, me: str, event: str, member: str) -> None:
        if self.events is not None:
            row = dict(wall=time.time(), t=round(t, 4), node=me, event=event, member=member)
            self.events.write(json.dumps(row) + "\n")
            self.events.flush()

    async def run(self, duration: float, status: Callable[["SwimHost"], None] | None = None,
                  every: float = 5.0) -> None:
        """Run every member for ``duration`` seconds; ``status(self)`` every ``every`` seconds."""
        runs = [asyncio.ensure_future(rt.run(timeout=duration)) for rt in self.runtimes]
        while status is not None and not all(r.done() for r in runs):
            await asyncio.wait(runs, timeout=every)
            status(self)
        await asyncio.gather(*runs)

    def table(self) -> list[tuple[str, int, int, int, int]]:
        """(member, alive, suspect, dead, incarnation) as each hosted member sees the cluster."""
        rows = []
        for node in self.nodes:
            counts = Counter(node.table.state)
            rows.append((node.node_id, counts[ALIVE], counts[SUSPECT], counts[DEAD], node.incarnation))
        return rows

    def stats(self) -> dict[str, int]:
        """Runtime rejection counters (summed) plus the members' own drop counters."""
        total = Counter({key: 0 for key in STAT_KEYS})
        for runtime in self.runtimes:
            total.update(runtime.stats)
        for node in self.nodes:
            total.update(node.stats)
        return dict(total)


def open_events(path: Path | None) -> TextIO | None:
    return None if path is None else open(path, "a", encoding="utf-8")
