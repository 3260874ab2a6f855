"""Same seed, same per-node random streams in the simulator and the asyncio runtime."""

from __future__ import annotations

import numpy as np
import pytest

from meshlearn.node import Node
from meshlearn.runtime import AsyncioRuntime
from meshlearn.sim.runtime import Simulator
from meshlearn.testing import NodeHarness


class Drawer(Node):
    """Draws from ctx.rng when started, then stops."""

    def on_start(self, ctx):
        self.draws = ctx.rng.random(5)
        ctx.stop()


def _draws(runtime_cls, seed, ids):
    nodes = [Drawer(i) for i in ids]
    if runtime_cls is Simulator:
        NodeHarness(*nodes, seed=seed)  # a Simulator hosting them, started
    else:
        rt = AsyncioRuntime(seed=seed)
        rt.add_nodes(nodes)
        assert rt.run_forever(timeout=5)
    return {n.node_id: n.draws for n in nodes}


@pytest.mark.timeout(30)
def test_same_seed_same_streams_as_the_simulator():
    ids = ["server", "c0", "c1", "c2"]
    sim, aio = _draws(Simulator, 7, ids), _draws(AsyncioRuntime, 7, ids)
    for node_id in ids:
        np.testing.assert_array_equal(sim[node_id], aio[node_id])
    assert not np.array_equal(aio["c0"], aio["c1"])  # streams differ between nodes
    assert not np.array_equal(aio["c0"], _draws(AsyncioRuntime, 8, ids)["c0"])  # and between seeds
