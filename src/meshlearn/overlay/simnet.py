"""Simulation set-up shared by the overlay experiments: many nodes, small datagrams, one key.

``overlay_simulator(nodes)`` builds a ``Simulator`` whose network gives every node one access
link (``link_scope="sender"``): per-pair links would number N² at 10,000 nodes. Frames carry the
HMAC of a simulation key, so the byte counts equal what the real UDP runtime sends.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from meshlearn.net.faults import Crash, Recover
from meshlearn.net.link import LinkSpec
from meshlearn.net.network import Network
from meshlearn.node import Node
from meshlearn.sim.runtime import Simulator
from meshlearn.wire import FrameCodec

__all__ = ["LAN_LINK", "SIM_CLUSTER_KEY", "overlay_simulator", "crash_at"]

LAN_LINK = LinkSpec(latency_s=0.0005, jitter_s=0.0005, bandwidth_bps=1e9)
SIM_CLUSTER_KEY = b"meshlearn-overlay-simulation"


def overlay_simulator(
    nodes: Iterable[Node], *, link: LinkSpec = LAN_LINK, seed: int = 0, trace: bool = False,
    sink=None,
) -> Simulator:
    """A simulator hosting ``nodes`` on a full mesh of access links (any node may reach any)."""
    network = Network(None, link, {}, np.random.SeedSequence([seed, 1]), link_scope="sender")
    sim = Simulator(network, seed=seed, frames=FrameCodec(SIM_CLUSTER_KEY), trace=trace, sink=sink)
    sim.add_nodes(nodes)
    return sim


def crash_at(sim: Simulator, node: str, time: float, recover_at: float | None = None) -> None:
    """Schedule a crash of ``node`` (and optionally its recovery)."""
    events = [Crash(time, node)] + ([] if recover_at is None else [Recover(recover_at, node)])
    sim.schedule_faults(events)
