"""The network: per-pair links over a topology, device bandwidth limits, partitions, byte counters.

``Network`` is what a runtime asks "if ``src`` sends ``nbytes`` to ``dst`` at ``now``, when does
it arrive?". Each directed pair gets its own ``Link`` on first use, with a Generator derived from
the root ``SeedSequence`` and a SHA-256 of the pair's names, so a pair's randomness does not depend
on which pairs were used before it. Only direct neighbours talk; there is no multi-hop routing.
With ``link_scope="sender"`` each node instead has one access link (its uplink queue, loss state
and Generator keyed by the node alone) shared by everything it sends: the scalable model for
overlays of thousands of nodes, where per-pair links would number in the millions.
With ``dynamics`` (see ``meshlearn.net.dynamics``) device bandwidth is read at send time from
``dynamics.profile_at(node, now)``; without it the static ``devices`` profiles are used.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from meshlearn.errors import UsageError
from meshlearn.net.devices import DeviceProfile
from meshlearn.net.dynamics import DeviceDynamics, keyed_rng
from meshlearn.net.link import DatagramTransfer, Link, LinkSpec, Transfer
from meshlearn.net.packetizer import packet_sizes
from meshlearn.net.topology import Topology

__all__ = ["Network", "pair_rng"]


def pair_rng(seed_seq: np.random.SeedSequence, src: str, dst: str) -> np.random.Generator:
    """Generator for the directed pair ``(src, dst)``, independent of any other pair's use."""
    return keyed_rng(seed_seq, "link", src, dst)


class Network:
    """Links between nodes, created lazily per directed pair, plus partitions and byte counters.

    ``link_overrides[(a, b)]`` replaces the default ``link`` spec for ``a → b`` only: links are
    directed, so an uplink and its downlink are configured separately. With ``topology=None``
    every pair may talk.
    """

    def __init__(
        self,
        topology: Topology | None,
        link: LinkSpec,
        devices: dict[str, DeviceProfile],
        seed_seq: np.random.SeedSequence,
        link_overrides: dict[tuple[str, str], LinkSpec] | None = None,
        dynamics: DeviceDynamics | None = None,
        link_scope: str = "pair",
    ):
        if link_scope not in ("pair", "sender"):
            raise UsageError(f"link_scope must be 'pair' or 'sender', got {link_scope!r}")
        if link_scope == "sender" and link_overrides:
            raise UsageError("link_overrides name directed pairs; they need link_scope='pair'")
        self.link_scope = link_scope
        self.topology = topology
        self.link_spec = link
        self.devices = dict(devices)
        self.seed_seq = seed_seq
        self.link_overrides = dict(link_overrides or {})
        self.dynamics = dynamics
        for pair in self.link_overrides:
            for node in pair:
                self._check_node(node)
        self.links: dict[tuple[str, str] | str, Link] = {}
        self._group: dict[str, int] | None = None
        self.bytes_sent: defaultdict[str, int] = defaultdict(int)
        self.bytes_received: defaultdict[str, int] = defaultdict(int)
        self.wire_bytes_sent: defaultdict[str, int] = defaultdict(int)

    # -- reachability -------------------------------------------------------------------

    def partition(self, groups: list[list[str]] | tuple[tuple[str, ...], ...]) -> None:
        """Split the network: only nodes in the same group talk; unlisted nodes form one more group."""
        group: dict[str, int] = {}
        for i, members in enumerate(groups):
            for node in members:
                if node in group:
                    raise UsageError(f"node {node!r} is in two partition groups; put it in one")
                group[node] = i
        self._group = group

    def heal(self) -> None:
        """End the partition."""
        self._group = None

    @property
    def partitioned(self) -> bool:
        return self._group is not None

    def reachable(self, src: str, dst: str) -> bool:
        """True when ``src`` may send to ``dst`` now (an edge exists and no partition separates them)."""
        if src == dst:
            raise UsageError(f"{src!r} sends to itself; deliver locally instead of through the network")
        if self.topology is not None:
            self._check_node(src)
            self._check_node(dst)
            if not self.topology.has_edge(src, dst):
                return False
        return self._group is None or self._group.get(src, -1) == self._group.get(dst, -1)

    def _check_node(self, node: str) -> None:
        if self.topology is not None and node not in self.topology:
            raise UsageError(f"unknown node {node!r}: it is not in the topology")

    # -- links --------------------------------------------------------------------------

    def link(self, src: str, dst: str) -> Link:
        """The ``Link`` carrying ``src → dst`` (created on first use)."""
        key = (src, dst) if self.link_scope == "pair" else src
        link = self.links.get(key)
        if link is None:
            if self.link_scope == "pair":
                link = Link(self.link_overrides.get(key) or self.link_spec, pair_rng(self.seed_seq, src, dst))
            else:
                link = Link(self.link_spec, keyed_rng(self.seed_seq, "uplink", src))
            self.links[key] = link
        return link

    def profile(self, node: str, now: float | None = None) -> DeviceProfile | None:
        """``node``'s device profile at ``now``: from ``dynamics`` when it covers the node, else static."""
        if self.dynamics is not None and now is not None:
            varying = self.dynamics.profile_at(node, now)
            if varying is not None:
                return varying
        return self.devices.get(node)

    def bandwidth(self, src: str, dst: str, now: float | None = None) -> float:
        """Effective rate: min of the link, ``src``'s uplink and ``dst``'s downlink (when known)."""
        rates = [self.link(src, dst).spec.bandwidth_bps]
        up, down = self.profile(src, now), self.profile(dst, now)
        if up is not None:
            rates.append(up.up_bps)
        if down is not None:
            rates.append(down.down_bps)
        return min(rates)

    # -- sending ------------------------------------------------------------------------

    def transmit(self, src: str, dst: str, nbytes: int, now: float, reliable: bool = True) -> Transfer | None:
        """Send a message; None when ``dst`` is not a neighbour or a partition separates them."""
        if not self.reachable(src, dst):
            return None
        result = self.link(src, dst).transmit(nbytes, now, reliable, self.bandwidth(src, dst, now))
        self._count(src, dst, nbytes, result.wire_bytes, nbytes if result.delivered else 0)
        return result

    def transmit_datagram(self, src: str, dst: str, nbytes: int, now: float) -> DatagramTransfer | None:
        """Send datagrams; the receiver gets only the packets in ``mask``. None when unreachable."""
        if not self.reachable(src, dst):
            return None
        link = self.link(src, dst)
        result = link.transmit_datagram(nbytes, now, self.bandwidth(src, dst, now))
        sizes = packet_sizes(nbytes, link.spec.mtu, link.spec.header_bytes)
        self._count(src, dst, nbytes, result.wire_bytes, int(sizes[result.mask].sum()))
        return result

    def datagram_arrival(self, src: str, dst: str, nbytes: int, now: float) -> float | None:
        """A datagram's arrival time, or None when lost or unreachable (scalar fast path).

        Same model as ``transmit_datagram`` without building a mask; messages larger than one
        packet go through it (all packets must arrive).
        """
        if not self.reachable(src, dst):
            return None
        link = self.link(src, dst)
        if nbytes > link.max_payload:
            result = self.transmit_datagram(src, dst, nbytes, now)
            return result.arrival if result.delivered else None
        bps = link.spec.bandwidth_bps if not self.devices and self.dynamics is None else self.bandwidth(src, dst, now)
        arrival, wire = link.small_datagram(nbytes, now, bps)
        self.bytes_sent[src] += nbytes
        self.wire_bytes_sent[src] += wire
        if arrival is not None:
            self.bytes_received[dst] += nbytes
        return arrival

    def _count(self, src: str, dst: str, sent: int, wire: int, received: int) -> None:
        self.bytes_sent[src] += int(sent)
        self.wire_bytes_sent[src] += int(wire)
        self.bytes_received[dst] += int(received)
