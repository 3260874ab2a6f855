"""Inference through swarm nodes in the simulator: requests cross servers, survive crashes, equal the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from meshlearn.executors import InlineExecutor
from meshlearn.models.zoo import build_model
from meshlearn.net.faults import Crash
from meshlearn.overlay.simnet import overlay_simulator
from meshlearn.swarm.blocks import BlockStack, SpanWorkspace
from meshlearn.swarm.nodes import SwarmClient, SwarmServer
from meshlearn.swarm.placement import Server
from meshlearn.wire import Message


@pytest.fixture(scope="module")
def model():
    net = build_model("mlp", (1, 8, 8), 10, 0, hidden=(32, 32))
    return net, BlockStack.from_zoo(net, "mlp", (1, 8, 8), 10, num_blocks=4, hidden=(32, 32))


SPANS = {"a": (0, 2), "b": (0, 2), "c": (2, 4), "d": (2, 4), "e": (0, 4)}
SERVERS = {s: Server(s, 10.0 if s != "e" else 2.0, end - start, "A") for s, (start, end) in SPANS.items()}
PLACEMENT = {s: start for s, (start, _) in SPANS.items()}


def _run(model, inputs, faults=(), **client_kw):
    net, stack = model
    servers = [SwarmServer(s, *SPANS[s]) for s in SPANS]
    client = SwarmClient("client", PLACEMENT, SERVERS, 4, inputs, site="A", latency=lambda a, b: 0.001,
                         timeout_s=0.2, **client_kw)
    sim = overlay_simulator([*servers, client])
    sim.executor = InlineExecutor(SpanWorkspace(stack))
    sim.schedule_faults(faults)
    sim.run(until=60.0)
    with torch.no_grad():
        expected = [net(torch.as_tensor(x)).numpy() for x in inputs]
    return client, servers, expected, sim


def _inputs(n=20):
    rng = np.random.default_rng(0)
    return [rng.standard_normal((2, 1, 8, 8)).astype(np.float32) for _ in range(n)]


def test_every_answer_equals_the_unsplit_model_bitwise(model):
    client, servers, expected, _ = _run(model, _inputs())
    assert len(client.outputs) == 20
    assert all(np.array_equal(client.outputs[i], expected[i]) for i in range(20))
    assert sum(s.served for s in servers) >= 40  # two hops per request


def test_servers_crashing_mid_run_lose_no_request_and_change_no_answer(model):
    inputs = _inputs()
    client, servers, expected, sim = _run(model, inputs, faults=[Crash(0.0105, "a"), Crash(0.03, "c")])
    assert len(client.outputs) == 20
    assert all(np.array_equal(client.outputs[i], expected[i]) for i in range(20))
    assert len(sim.sink.series("hop_failures")) >= 2 and client.longest_wait < 0.5  # a timeout + a retry, at most


def test_a_server_refuses_blocks_it_does_not_host_and_garbage_activations(model):
    _, stack = model
    from meshlearn.testing import NodeHarness

    h = NodeHarness(SwarmServer("a", 0, 2), peers=["cl"], executor=InlineExecutor(SpanWorkspace(stack)))
    h.deliver("cl", Message.make("sw.run", {"x": np.zeros((1, 1, 8, 8), np.float32)}, req=0, attempt=1, start=2,
                                 end=4))
    h.deliver("cl", Message.make("sw.run", {"x": np.full((1, 1, 8, 8), np.nan, np.float32)}, req=1, attempt=2,
                                 start=0, end=2))
    h.deliver("cl", Message.make("sw.run", {"x": np.zeros((1, 3), np.float32)}, req=2, attempt=3, start=0, end=2))
    replies = [s.msg for s in h.take_sent()]
    assert [m.kind for m in replies] == ["sw.err"] * 3
    assert "not hosted" in replies[0].meta["reason"] and h.node.refused == 3


class Liar(SwarmServer):
    """Answers with NaN activations of the right shape."""

    def on_task_done(self, ctx, task_id, result):
        src, meta = self.pending.pop(task_id)
        ctx.send(src, Message.make("sw.out", {"y": np.full_like(result.y, np.nan)}, req=meta["req"],
                                   attempt=meta["attempt"], end=meta["end"]))


def test_a_server_answering_garbage_is_banned_itself_and_answers_stay_exact(model):
    net, stack = model
    servers = [Liar("a", 0, 2), *(SwarmServer(s, *SPANS[s]) for s in SPANS if s != "a")]
    check = lambda boundary, y: stack.specs[boundary].problem(y)  # noqa: E731
    client = SwarmClient("client", PLACEMENT, SERVERS, 4, _inputs(5), site="A", latency=lambda a, b: 0.001,
                         timeout_s=0.2, check=check)
    sim = overlay_simulator([*servers, client])
    sim.executor = InlineExecutor(SpanWorkspace(stack))
    sim.run(until=30.0)
    with torch.no_grad():
        expected = [net(torch.as_tensor(x)).numpy() for x in _inputs(5)]
    assert all(np.array_equal(client.outputs[i], expected[i]) for i in range(5))
    assert client.reroutes == 1 and "a" in client.suspects  # the liar, once, then never again
