"""Overlay nodes over real UDP sockets in one process: SWIM joins and rejects forged rumours, Chord converges."""

import asyncio
import random
import socket

import pytest

from meshlearn.errors import UsageError
from meshlearn.overlay.swim.config import swim_preset
from meshlearn.overlay.swim.packets import DEAD, Gossip
from meshlearn.overlay.swim.udp import SwimHost, parse_cluster
from meshlearn.wire import FrameCodec

KEY = b"cluster-key"


def free_ports(n: int) -> list[int]:
    """n ports free for both TCP and UDP, below the kernel's ephemeral range (32768+), so outbound
    connections of other tests cannot take them between this check and the bind."""
    found: list[int] = []
    while len(found) < n:
        port = random.randrange(20_000, 32_000)
        try:
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                with socket.socket(socket.AF_INET, kind) as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        if port not in found:
            found.append(port)
    return found


async def attack(targets: list[tuple[str, int]], victim: str) -> None:
    """Send 'victim is dead' rumours sealed with the wrong key, plus garbage, every 100 ms."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
    forged = FrameCodec(b"not-the-key").seal(victim, Gossip(0, "", ((DEAD, victim, 9, victim),)).encode())
    for _ in range(30):
        for addr in targets:
            transport.sendto(forged, addr)
            transport.sendto(b"\x00garbage", addr)
        await asyncio.sleep(0.1)
    transport.close()


def test_members_join_over_udp_and_reject_forged_dead_rumours():
    cluster = {f"127.0.0.1:{p}": ("127.0.0.1", p) for p in free_ports(5)}
    ids = list(cluster)
    host = SwimHost(ids, cluster, config=swim_preset("local"), seeds=ids[:1], secret=KEY)

    async def main():
        await asyncio.gather(host.run(8.0), attack(list(cluster.values()), ids[2]))  # 8 s: slack for a loaded CI machine

    asyncio.run(main())
    assert all(alive == 5 and dead == 0 for _, alive, _, dead, _ in host.table())
    assert host.stats()["datagrams_rejected"] >= 2 * 30 * 5 * 0.9  # forged + garbage, nearly all counted


def test_parse_cluster_ranges_and_errors():
    assert list(parse_cluster(["10.0.0.1:7000-7002", "h:9"])) == ["10.0.0.1:7000", "10.0.0.1:7001",
                                                                  "10.0.0.1:7002", "h:9"]
    for bad in ["7000-7002", "h:x", "h:9-3"]:
        with pytest.raises(UsageError, match="HOST:PORT"):
            parse_cluster([bad])


def test_a_chord_ring_forms_over_udp_exactly_as_in_simulation():
    from meshlearn.overlay.chord.node import ChordNode, ChordSettings, bootstrap_ring, ring_peers
    from meshlearn.overlay.swim.udp import runtimes_for

    cluster = {f"127.0.0.1:{p}": ("127.0.0.1", p) for p in free_ports(10)}
    names = list(cluster)
    settings = ChordSettings(bits=16, successors=3, stabilize_s=0.2, fix_fingers_s=0.05, check_predecessor_s=0.2)
    nodes = [ChordNode(n, settings=settings, bootstrap=None if n == names[0] else names[0]) for n in names]
    runtimes = runtimes_for(nodes, cluster, secret=KEY)

    async def main():
        await asyncio.gather(*(rt.run(timeout=6.0) for rt in runtimes))

    asyncio.run(main())
    want = bootstrap_ring(ring_peers(names, 16), bits=16, successors=3)
    assert [n.node_id for n in nodes if n.state() != want[n.node_id]] == []


def test_a_skip_graph_forms_over_udp_exactly_as_in_simulation():
    import numpy as np

    from meshlearn.overlay.skipgraph.node import SkipGraphNode, SkipGraphSettings, bootstrap_skipgraph, random_mvecs
    from meshlearn.overlay.swim.udp import runtimes_for

    cluster = {f"127.0.0.1:{p}": ("127.0.0.1", p) for p in free_ports(10)}
    names, rng = list(cluster), np.random.default_rng(4)
    keys, mvecs = [int(k) for k in rng.choice(10**6, size=10, replace=False)], random_mvecs(10, rng)
    settings = SkipGraphSettings(keepalive_s=0.5)
    nodes = [SkipGraphNode(n, k, m, introducer=None if i == 0 else names[0], join_delay_s=0.2 * i, settings=settings)
             for i, (n, k, m) in enumerate(zip(names, keys, mvecs))]
    runtimes = runtimes_for(nodes, cluster, secret=KEY)

    async def main():
        await asyncio.gather(*(rt.run(timeout=5.0) for rt in runtimes))

    asyncio.run(main())
    view = bootstrap_skipgraph([(x.me, x.mvec) for x in nodes])
    wrong = [x.node_id for x in nodes
             if x.snapshot()[:4] != (view.left[x.key], view.right[x.key], view.lefts[x.key], view.rights[x.key])]
    assert all(x.joined for x in nodes) and wrong == []
