"""Generation through swarm servers in the simulator: KV sessions, replacement after a crash, session limits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from meshlearn.data.text import CharVocab, load_corpus
from meshlearn.errors import UsageError
from meshlearn.executors import InlineExecutor
from meshlearn.models.gpt import GPTConfig, build_gpt, train_lm
from meshlearn.net.faults import Crash
from meshlearn.overlay.simnet import overlay_simulator
from meshlearn.swarm.blocks import BlockStack, SpanWorkspace, generate_local
from meshlearn.swarm.generate import GenerationClient, Sampler
from meshlearn.swarm.nodes import FULL, LOST, SessionTable, SwarmClient, SwarmServer
from meshlearn.swarm.placement import Server
from meshlearn.swarm.tasks import SpanTask, StepTask
from meshlearn.testing import NodeHarness
from meshlearn.wire import Message

SPANS = {"a": (0, 2), "b": (0, 2), "c": (2, 4), "d": (2, 4)}
SERVERS = {s: Server(s, 10.0, end - start, "A") for s, (start, end) in SPANS.items()}
PLACEMENT = {s: start for s, (start, _) in SPANS.items()}
PROMPT = "The weather "
N = 40


@pytest.fixture(scope="module")
def lm():
    """A 4-block GPT trained a little (so greedy picks are clear-cut, not ties of an untrained model)."""
    text = load_corpus()
    vocab = CharVocab.from_text(text)
    gpt = build_gpt(GPTConfig(vocab.size, n_blocks=4, d_model=32, n_heads=4, context=64), 0)
    train_lm(gpt, vocab.encode(text), steps=60, seed=0)
    return gpt, BlockStack.from_gpt(gpt), vocab, vocab.encode(PROMPT)[None]


def _reference(gpt, prompt, n, sampler):
    """The unsplit model's own incremental decoding (GPT.forward_step)."""
    with torch.no_grad():
        logits, caches = gpt.forward_step(torch.as_tensor(prompt))
        out = []
        for _ in range(n):
            out.append(sampler(logits[:, -1].numpy()))
            logits, caches = gpt.forward_step(torch.as_tensor(out[-1][:, None]), caches)
    return np.stack(out, 1)


def _generate(lm, servers=None, faults=(), clients=None, **kw):
    _, stack, _, prompt = lm
    servers = servers or [SwarmServer(s, *SPANS[s]) for s in SPANS]
    clients = clients or [GenerationClient("client", PLACEMENT, SERVERS, 4, prompt, N, site="A",
                                           latency=lambda a, b: 0.001, timeout_s=0.2,
                                           check=lambda b, y: stack.specs[b].problem(y), **kw)]
    sim = overlay_simulator([*servers, *clients])
    sim.executor = InlineExecutor(SpanWorkspace(stack))
    sim.stop_on = set()  # run until every client is done and the servers are idle
    sim.schedule_faults(faults)
    sim.run(until=60.0)
    return clients[0], {s.node_id: s for s in servers}


def test_generation_equals_the_unsplit_model_token_for_token(lm):
    gpt, _, _, prompt = lm
    client, servers = _generate(lm)
    expected = _reference(gpt, prompt, N, Sampler())
    assert client.done and np.array_equal(client.generated, expected)
    with torch.no_grad():  # and the plain full forward agrees, token by token
        seq = np.concatenate([prompt, expected], 1)
        full = gpt(torch.as_tensor(seq[:, :-1])).argmax(-1).numpy()[:, prompt.shape[1] - 1:]
    assert np.array_equal(full, expected)
    assert servers["a"].steps_served == servers["c"].steps_served == N and client.rebuilds == 0
    assert all(len(s.sessions) == 0 for s in servers.values())  # the client closed its sessions


def test_sampled_generation_equals_the_unsplit_model_with_the_same_seed(lm):
    gpt, stack, _, prompt = lm
    client, _ = _generate(lm, sampler=Sampler(temperature=0.9, top_k=8, seed=3))
    expected = _reference(gpt, prompt, N, Sampler(temperature=0.9, top_k=8, seed=3))
    assert np.array_equal(client.generated, expected)
    assert np.array_equal(generate_local(stack, prompt, N, Sampler(0.9, 8, 3)), expected)
    assert not np.array_equal(expected, _reference(gpt, prompt, N, Sampler()))  # it did sample


@pytest.mark.parametrize("victim, boundary", [("a", 0), ("c", 2)])
def test_a_server_crashing_mid_generation_is_rebuilt_from_the_history_and_the_text_is_identical(lm, victim, boundary):
    gpt, _, _, prompt = lm
    client, servers = _generate(lm, faults=[Crash(0.0305, victim)])
    assert client.done and np.array_equal(client.generated, _reference(gpt, prompt, N, Sampler()))
    assert client.reroutes == 1 and client.rebuilds == 1 and victim in client.banned
    token = client.rebuilt_positions - prompt.shape[1] + 1  # the token whose step met the dead server
    assert 0 < token < N - 1
    first, second = ("a", "b") if victim == "a" else ("c", "d")
    assert servers[first].steps_served + servers[second].steps_served == N  # one replay step replaced the lost ones
    if boundary:  # nothing before the boundary ran again
        assert servers["a"].steps_served == N and servers["b"].steps_served == 0
    assert 0.2 <= client.longest_wait < 0.3  # one timeout, then one replay step


class Forgetful(SwarmServer):
    """Loses its sessions once, after its 5th step (as after an expiry or a restart)."""

    def on_task_done(self, ctx, task_id, result):
        super().on_task_done(ctx, task_id, result)
        if self.steps_served == 5:
            self.sessions.clear()


def test_a_server_that_lost_the_session_refuses_and_the_client_replays_to_it(lm):
    gpt, _, _, prompt = lm
    servers = [Forgetful("a", 0, 2), *(SwarmServer(s, *SPANS[s]) for s in "bcd")]
    client, by_id = _generate(lm, servers=servers)
    assert np.array_equal(client.generated, _reference(gpt, prompt, N, Sampler()))
    assert client.lost == 1 and client.rebuilds == 1 and client.reroutes == 0  # not banned: replayed to a itself
    assert client.rebuilt_positions == prompt.shape[1] + 4 and by_id["b"].steps_served == 0


def test_a_server_answers_a_step_for_an_unknown_session_with_lost(lm):
    _, stack, _, _ = lm
    h = NodeHarness(SwarmServer("a", 0, 2), peers=["cl"], executor=InlineExecutor(SpanWorkspace(stack)))
    h.deliver("cl", Message.make("sw.step", {"x": np.zeros((1, 1), np.int64)}, session=7, attempt=1, start=0,
                                 end=2, past=5))
    (reply,) = [s.msg for s in h.take_sent()]
    assert reply.kind == "sw.err" and reply.meta["code"] == LOST and "replay the history" in reply.meta["reason"]


def _open(h, session, past=0, x=None, client="cl"):
    x = np.zeros((1, 3), np.int64) if x is None else x
    h.deliver(client, Message.make("sw.step", {"x": x}, session=session, attempt=session, start=0, end=2, past=past))
    return [s.msg for s in h.take_sent()]


def test_sessions_over_capacity_are_refused_clearly_and_idle_ones_expire(lm):
    _, stack, _, _ = lm
    h = NodeHarness(SwarmServer("a", 0, 2, max_sessions=2, session_ttl_s=5.0), peers=["cl", "cm"],
                    executor=InlineExecutor(SpanWorkspace(stack)))
    assert [m.kind for m in _open(h, 1) + _open(h, 2, client="cm")] == ["sw.out", "sw.out"]
    (full,) = _open(h, 3)
    assert full.kind == "sw.err" and full.meta["code"] == FULL and "limit of 2 generation sessions" in full.meta["reason"]
    h.advance(3.0)
    assert _open(h, 1, past=3, x=np.zeros((1, 1), np.int64))[0].kind == "sw.out"  # known sessions still step
    h.advance(2.5)  # session 2 idle past its ttl: the sweep timer drops it, session 1 (idle 2.5 s) stays
    assert len(h.node.sessions) == 1 and h.node.sessions.expired == 1
    assert _open(h, 3)[0].kind == "sw.out"
    h.deliver("cl", Message.make("sw.close", session=1))
    assert len(h.node.sessions) == 1


def test_a_full_server_is_routed_around_and_both_generations_are_exact(lm):
    gpt, _, _, prompt = lm
    servers = [SwarmServer("a", 0, 2, max_sessions=1), *(SwarmServer(s, *SPANS[s]) for s in "bcd")]
    clients = [GenerationClient(f"cl{i}", PLACEMENT, SERVERS, 4, prompt, N, site="A", latency=lambda a, b: 0.001,
                                timeout_s=0.2, session=1) for i in range(2)]
    _generate(lm, servers=servers, clients=clients)
    expected = _reference(gpt, prompt, N, Sampler())
    assert all(c.done and np.array_equal(c.generated, expected) for c in clients)
    late = max(clients, key=lambda c: c.reroutes)  # whichever reached a second
    assert sorted(c.reroutes for c in clients) == [0, 1] and "a" in late.suspects and "a" not in late.banned


class Liar(SwarmServer):
    """Answers its 3rd step with NaN hidden states of the right shape."""

    def _step_done(self, ctx, task_id, result):
        if self.steps_served == 2 and result.y is not None:
            result = type(result)(np.full_like(result.y, np.nan), result.caches)
        super()._step_done(ctx, task_id, result)


def test_a_server_answering_garbage_mid_generation_is_banned_and_the_text_stays_exact(lm):
    gpt, _, _, prompt = lm
    client, by_id = _generate(lm, servers=[Liar("a", 0, 2), *(SwarmServer(s, *SPANS[s]) for s in "bcd")])
    assert np.array_equal(client.generated, _reference(gpt, prompt, N, Sampler()))
    assert client.banned == {"a"} and client.rebuilds == 1 and by_id["c"].steps_served == N


def test_the_step_task_equals_the_stack_step_and_keeps_the_stateless_path(lm):
    _, stack, _, prompt = lm
    ws = SpanWorkspace(stack)
    first = ws.run(StepTask(0, 2, prompt, (None, None)))
    second = ws.run(StepTask(0, 2, prompt[:, -1:], first.caches))
    assert [c.length for c in second.caches] == [prompt.shape[1] + 1] * 2
    with torch.no_grad():
        y, _ = stack.step(0, np.concatenate([prompt, prompt[:, -1:]], 1))
        y, _ = stack.step(1, y)
    assert torch.allclose(torch.from_numpy(second.y), y[:, -1:], atol=1e-6)
    assert ws.run(StepTask(0, 2, np.full((1, 1), 99, np.int64), (None, None))).problem  # ids past the vocabulary
    with pytest.raises(UsageError):
        ws.run(StepTask(0, 2, prompt, ()))  # one cache entry per block
    with torch.no_grad():
        np.testing.assert_array_equal(ws.run(SpanTask(0, 4, prompt)).y, stack.run_span(0, 4, prompt).numpy())


def test_sampler_and_session_table_reject_bad_arguments():
    with pytest.raises(UsageError):
        Sampler(temperature=-1)
    with pytest.raises(UsageError):
        SessionTable(max_sessions=0)
    logits = np.array([[0.0, 5.0, 1.0], [3.0, 0.0, 0.0]])
    assert Sampler()(logits).tolist() == [1, 0]
    picks = np.stack([Sampler(1.0, top_k=2, seed=s)(logits) for s in range(50)])
    assert set(picks[:, 0]) <= {1, 2} and set(picks[:, 1]) <= {0, 1, 2}


def test_stateless_requests_and_a_generation_share_the_servers(lm):
    gpt, _, _, prompt = lm
    windows = [prompt[:, i:i + 6] for i in range(5)]
    stateless = SwarmClient("req", PLACEMENT, SERVERS, 4, windows, site="A", latency=lambda a, b: 0.001, timeout_s=0.2)
    generating = GenerationClient("gen", PLACEMENT, SERVERS, 4, prompt, N, site="A", latency=lambda a, b: 0.001,
                                  timeout_s=0.2)
    _generate(lm, clients=[generating, stateless])
    assert np.array_equal(generating.generated, _reference(gpt, prompt, N, Sampler()))
    with torch.no_grad():
        assert all(np.array_equal(stateless.outputs[i], gpt(torch.as_tensor(w)).numpy()) for i, w in enumerate(windows))
