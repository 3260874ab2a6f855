"""A self-organising swarm in the simulator: servers place themselves from gossiped announcements,
re-place when others crash, liars are refused, and a client that learns the placement from the swarm
gets every answer equal to the unsplit model's."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from meshlearn.errors import UsageError
from meshlearn.executors import InlineExecutor
from meshlearn.models.zoo import build_model
from meshlearn.net.faults import Crash
from meshlearn.net.link import LinkSpec
from meshlearn.overlay.simnet import overlay_simulator
from meshlearn.swarm.announce import AnnouncingServer, DirectoryClient
from meshlearn.swarm.blocks import BlockStack, SpanWorkspace
from meshlearn.testing import NodeHarness
from meshlearn.wire import Message

BLOCKS = 4


@pytest.fixture(scope="module")
def model():
    net = build_model("mlp", (1, 8, 8), 10, 0, hidden=(32, 32))
    stack = BlockStack.from_zoo(net, "mlp", (1, 8, 8), 10, num_blocks=BLOCKS, hidden=(32, 32))
    return net, stack, [stack.digest(i) for i in range(BLOCKS)]


def _inputs(n):
    rng = np.random.default_rng(1)
    return [rng.standard_normal((2, 1, 8, 8)).astype(np.float32) for _ in range(n)]


def _swarm(digests, n=6, **kw):
    ids = [f"s{i}" for i in range(n)]
    return [AnnouncingServer(sid, None, 2, blocks=BLOCKS, seeds=ids[:1], digests=digests, target=2, **kw)
            for sid in ids]


def _run(model, servers, inputs, faults=(), until=60.0, latency=0.001):
    net, stack, digests = model
    client = DirectoryClient("client", ["s0"], BLOCKS, inputs, digests=digests, site="A",
                             latency=lambda a, b: latency, timeout_s=0.3, retry_s=0.25)
    sim = overlay_simulator([*servers, client], link=LinkSpec(latency_s=latency, bandwidth_bps=1e9))
    sim.executor = InlineExecutor(SpanWorkspace(stack))
    sim.stop_on = set()  # the swarm goes on after the client is done: placement is checked at `until`
    sim.schedule_faults(faults)
    sim.run(until=until)
    with torch.no_grad():
        expected = [net(torch.as_tensor(x)).numpy() for x in inputs]
    return client, sim, expected


def _replicas(servers, alive):
    reps = [0] * BLOCKS
    for s in servers:
        if s.node_id in alive:
            for b in range(s.start, s.end):
                reps[b] += 1
    return reps


def test_servers_place_themselves_without_picking_the_same_blocks(model):
    servers = _swarm(model[2])
    client, sim, expected = _run(model, servers, _inputs(10), until=20.0)
    assert _replicas(servers, {s.node_id for s in servers}) == [3, 3, 3, 3]  # 6 servers x 2 blocks, spread evenly
    last = [r for r in sim.sink.rows if r["key"] == "swarm.min_replicas" and r["round"] == servers[0].ticks]
    assert [r["value"] for r in last] == [3.0] * 6  # the metric stream: every server's view, period by period
    assert len(client.outputs) == 10 and all(np.array_equal(client.outputs[i], expected[i]) for i in range(10))
    assert all(len(s.directory.entries) == 6 for s in servers)


def test_crashes_are_healed_by_moving_a_spare_and_answers_stay_exact(model):
    servers = _swarm(model[2])
    crash = [Crash(8.0, "s1"), Crash(8.0, "s2")]
    client, sim, expected = _run(model, servers, _inputs(400), faults=crash, until=80.0, latency=0.01)
    assert max(client.outputs) == 399 and sim.sink.series("hop_failures")  # requests were in flight at the crashes
    alive = {s.node_id for s in servers} - {"s1", "s2"}
    assert min(_replicas(servers, alive)) >= 2  # 4 servers x 2 blocks: every block back at its target
    assert sum(s.moves for s in servers) <= 2  # only what the two crashes needed
    assert all(set(s.directory.entries) == alive for s in servers if s.node_id in alive)
    assert len(client.outputs) == 400 and all(np.array_equal(client.outputs[i], expected[i]) for i in range(400))


class OtherWeights(AnnouncingServer):
    """Announces blocks 0-1 with digests that are not the model's (other weights, or none of them held)."""

    def _own(self):
        return replace(super()._own(), digests=("0" * 64,) * (self.end - self.start))


def test_a_server_announcing_blocks_it_does_not_hold_is_refused_and_never_used(model):
    servers = _swarm(model[2], n=4)
    liar = OtherWeights("liar", 0, 2, blocks=BLOCKS, seeds=["s0"], digests=model[2], target=2)
    client, _, expected = _run(model, [*servers, liar], _inputs(20), until=20.0)
    assert all("liar" not in s.directory.entries for s in [*servers, client])
    assert servers[0].directory.rejected["digest"] >= 3  # its seed refuses every heartbeat of the liar
    assert len(client.outputs) == 20 and liar.served == 0
    assert all(np.array_equal(client.outputs[i], expected[i]) for i in range(20))


def test_forged_and_malformed_directory_messages_are_counted(model):
    h = NodeHarness(AnnouncingServer("s0", 0, 2, blocks=BLOCKS, digests=model[2]), peers=["s1", "s2"],
                    executor=InlineExecutor(SpanWorkspace(model[1])))
    good = {"server": "s1", "start": 2, "end": 4, "rate": 3.0, "seq": 1, "digests": model[2][2:4]}
    h.deliver("s2", Message.make("sw.dir", entries=[{**good, "seq": 9, "server": "s2", "start": 7}]))
    h.deliver("s2", Message.make("sw.dir", entries="junk"))
    h.deliver("s1", Message.make("sw.dir", entries=[good]))
    h.deliver("s1", Message.make("sw.dir", entries=[{**good, "seq": 0}]))  # older news from the server itself
    d = h.node.directory
    assert sorted(d.entries) == ["s0", "s1"] and dict(d.rejected) == {"span": 1, "malformed": 1, "stale": 1}


def test_a_process_workspace_loads_a_new_span_from_the_model_file_and_drops_the_old(model, tmp_path):
    from meshlearn.swarm.modelfile import read_header
    from meshlearn.swarm.tasks import LoadSpan, SpanTask

    net, stack, digests = model
    path = stack.save(tmp_path / "m.safetensors")
    assert read_header(path).digests == tuple(digests)
    ws = SpanWorkspace(BlockStack.load(path, 0, 2), model=path)
    ws.run(LoadSpan(1, 3))
    assert ws.stack.held == (1, 2)
    with torch.no_grad():
        h = stack.run_span(0, 1, _inputs(1)[0])
        expected = stack.run_span(1, 3, h).numpy()
    assert np.array_equal(ws.run(SpanTask(1, 3, h.numpy())).y, expected)
    with pytest.raises(UsageError, match="no model file"):
        SpanWorkspace(BlockStack.load(path, 0, 1)).run(LoadSpan(2, 4))


def test_servers_that_placed_themselves_on_stale_views_spread_out_by_filling_the_gap(model):
    ids = [f"s{i}" for i in range(4)]
    servers = [AnnouncingServer(sid, 0, 2, blocks=BLOCKS, seeds=ids[:1], digests=model[2], target=2) for sid in ids]
    client, _, expected = _run(model, servers, _inputs(30), until=20.0)
    assert _replicas(servers, set(ids)) == [2, 2, 2, 2] and sum(s.moves for s in servers) == 2
    assert len(client.outputs) == 30 and all(np.array_equal(client.outputs[i], expected[i]) for i in range(30))


def test_a_request_for_blocks_a_moving_server_just_dropped_is_refused_not_a_crash(model, tmp_path):
    from meshlearn.swarm.tasks import LoadSpan, SpanTask, StepTask

    path = model[1].save(tmp_path / "m.safetensors")
    ws = SpanWorkspace(BlockStack.load(path, 0, 2), model=path)
    ws.run(LoadSpan(2, 4))  # the server moved; a request for its old span was already queued
    result = ws.run(SpanTask(0, 2, _inputs(1)[0]))
    assert result.y is None and "no longer held" in result.problem
    assert "no longer held" in ws.run(StepTask(0, 1, np.zeros((1, 1), np.int64), (None,))).problem
