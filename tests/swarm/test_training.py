"""Pipeline training through swarm nodes in the simulator: the loss curve is single-process training's,
crashes cost only in-flight micro-batches, replicas stay bitwise identical, bad messages are refused."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from meshlearn.data.text import CharVocab, load_corpus
from meshlearn.executors import InlineExecutor
from meshlearn.models.gpt import GPTConfig, build_gpt, lm_batches, train_lm
from meshlearn.net.faults import Crash
from meshlearn.overlay.simnet import overlay_simulator
from meshlearn.swarm.blocks import BlockStack
from meshlearn.swarm.train_blocks import TrainWorkspace
from meshlearn.swarm.train_tasks import ForwardTask
from meshlearn.swarm.training import APPLY, TrainClient, TrainServer
from meshlearn.testing import NodeHarness
from meshlearn.wire import Message

STEPS, BATCH, SEED = 30, 8, 1
SPANS = {"a": (0, 2), "b": (0, 2), "c": (2, 4), "d": (2, 4)}  # 2 replicas of each of 2 spans
PARTNER = {"a": "b", "b": "a", "c": "d", "d": "c"}


@pytest.fixture(scope="module")
def setup():
    text = load_corpus()
    vocab = CharVocab.from_text(text)
    tokens = vocab.encode(text)
    model = build_gpt(GPTConfig(vocab.size, n_blocks=4, d_model=32, n_heads=4, context=32), seed=0)
    stack = BlockStack.from_gpt(copy.deepcopy(model))
    reference = train_lm(copy.deepcopy(model), tokens, steps=STEPS, seed=SEED, batch_size=BATCH)
    batches = list(lm_batches(tokens, steps=STEPS, batch_size=BATCH, context=32, seed=SEED))
    return stack, batches, reference


def _train(setup, micro_batches=1, faults=(), servers=None, spans=SPANS):
    stack, batches, _ = setup
    workspace = TrainWorkspace.from_stack(stack, spans)
    servers = servers or [TrainServer(s, *span) for s, span in spans.items()]
    client = TrainClient("client", spans, batches, micro_batches=micro_batches, timeout_s=0.2,
                         check=lambda boundary, y: stack.specs[boundary].problem(y))
    sim = overlay_simulator([*servers, client])
    sim.executor = InlineExecutor(workspace)
    sim.schedule_faults(faults)
    sim.run(until=60.0)
    return client, workspace


def _replicas_agree(workspace, alive):
    return all(workspace.digests(s) == workspace.digests(PARTNER[s]) for s in alive if PARTNER[s] in alive)


def test_one_micro_batch_per_step_is_single_process_training_bitwise(setup):
    client, workspace = _train(setup)
    assert client.done and client.losses == setup[2]  # same ops in the same order: bitwise fp32
    assert client.digest_mismatches == 0 and _replicas_agree(workspace, SPANS)
    assert all(workspace.servers[s].version == STEPS for s in SPANS)


def test_micro_batches_pipeline_and_match_within_float_tolerance(setup):
    client, workspace = _train(setup, micro_batches=4)
    np.testing.assert_allclose(client.losses, setup[2], rtol=1e-5, atol=1e-6)  # gradient sums in another order
    assert client.digest_mismatches == 0 and _replicas_agree(workspace, SPANS)


def test_crashes_mid_run_redo_only_in_flight_micro_batches_and_lose_no_committed_update(setup):
    # "a" is the primary of blocks 0-1 (ties break by id), "d" a backup of blocks 2-3
    faults = [Crash(0.15, "a"), Crash(0.45, "d")]
    client, workspace = _train(setup, micro_batches=2, faults=faults)
    assert client.done and len(client.losses) == STEPS
    np.testing.assert_allclose(client.losses, setup[2], rtol=1e-5, atol=1e-6)
    assert {f["server"] for f in client.failures} == {"a", "d"}
    assert client.aborted_attempts == 1 and client.redone_micro_batches <= 2  # a's in-flight step, d cost nothing
    assert _replicas_agree(workspace, {"b", "c"})
    assert {str(k): v for k, v in workspace.digests("b").items()} == client.digests["b"]
    assert workspace.servers["b"].version == workspace.servers["c"].version == STEPS


class SilentAtApply(TrainServer):
    """Dies, in effect, right at the commit point of step 5: it never answers that apply."""

    def on_message(self, ctx, src, msg):
        if msg.kind == APPLY and msg.meta.get("step") == 5:
            return
        super().on_message(ctx, src, msg)


def test_a_holder_lost_after_the_commit_point_costs_no_redo(setup):
    servers = [SilentAtApply("a", 0, 2), *(TrainServer(s, *SPANS[s]) for s in ("b", "c", "d"))]
    client, workspace = _train(setup, micro_batches=2, servers=servers)
    np.testing.assert_allclose(client.losses, setup[2], rtol=1e-5, atol=1e-6)
    assert client.failures[0]["phase"] == "apply" and client.aborted_attempts == client.redone_micro_batches == 0
    assert workspace.servers["a"].version == 5 and workspace.servers["b"].version == STEPS


def test_a_server_holding_more_than_its_hop_takes_over_and_backs_up_the_rest(setup):
    spans = {**SPANS, "e": (0, 4)}  # slower per block (4 blocks on one rate): the chain avoids it until a, b die
    client, workspace = _train(setup, micro_batches=2, faults=[Crash(0.1, "a"), Crash(0.3, "b")], spans=spans)
    np.testing.assert_allclose(client.losses, setup[2], rtol=1e-5, atol=1e-6)
    assert client.aborted_attempts == 2 and client.digest_mismatches == 0
    e, c = workspace.digests("e"), workspace.digests("c")
    assert e[2] == c[2] and e[3] == c[3] and workspace.servers["e"].version == STEPS


class Liar(TrainServer):
    """Answers every forward with NaN activations of the right shape."""

    def on_task_done(self, ctx, task_id, result):
        if result.y is not None and self.pending[task_id][1] == "sw.fwd":
            result.y[...] = np.nan
        super().on_task_done(ctx, task_id, result)


def test_a_primary_answering_nan_is_banned_and_the_step_redone_exactly(setup):
    servers = [Liar("a", 0, 2), *(TrainServer(s, *SPANS[s]) for s in ("b", "c", "d"))]
    client, _ = _train(setup, micro_batches=2, servers=servers)
    np.testing.assert_allclose(client.losses, setup[2], rtol=1e-5, atol=1e-6)
    assert [f["server"] for f in client.failures] == ["a"] and "NaN" in client.failures[0]["why"]
    assert client.redone_micro_batches <= 2


class BadGrads(TrainServer):
    """From step 3 on, answers a prepare with one gradient cut short (a shape no holder would accept)."""

    def on_task_done(self, ctx, task_id, result):
        if result.grads and self.pending[task_id][2]["step"] >= 3:
            params = result.grads[min(result.grads)]
            name = min(params)
            params[name] = params[name][:1]
        super().on_task_done(ctx, task_id, result)


def test_a_primary_sending_malformed_gradients_is_banned_before_any_holder_applies(setup):
    servers = [BadGrads("a", 0, 2), *(TrainServer(s, *SPANS[s]) for s in ("b", "c", "d"))]
    client, workspace = _train(setup, micro_batches=2, servers=servers)
    np.testing.assert_allclose(client.losses, setup[2], rtol=1e-5, atol=1e-6)
    assert [(f["server"], f["step"], f["phase"]) for f in client.failures] == [("a", 3, "prep")]
    assert workspace.servers["b"].version == STEPS and client.digest_mismatches == 0


def _messages(stack, x, t):
    tag = {"step": 0, "attempt": 1}
    fwd = Message.make("sw.fwd", {"x": x, "t": t}, **tag, mb=0, start=0, end=4, scale=1.0)
    return fwd, Message.make("sw.bwd", **tag, mb=0, start=0, end=4, rows=len(x)), \
        Message.make("sw.prep", **tag, start=0, end=4), Message.make("sw.apply", **tag)


def test_stale_commits_and_unknown_backwards_are_refused_and_counted(setup):
    stack, batches, _ = setup
    workspace = TrainWorkspace.from_stack(stack, {"s": (0, 4)})
    h = NodeHarness(TrainServer("s", 0, 4), peers=["cl"], executor=InlineExecutor(workspace))
    fwd, bwd, prep, apply = _messages(stack, *batches[0])
    for msg in (fwd, bwd, prep, apply):
        h.deliver("cl", msg)
    assert [s.msg.kind for s in h.take_sent()] == ["sw.act", "sw.gin", "sw.grads", "sw.applied"]
    h.deliver("cl", apply)  # the same commit again
    h.deliver("cl", Message.make("sw.bwd", step=7, attempt=99, mb=0, start=0, end=4, rows=8))
    h.deliver("cl", Message.make("sw.fwd", {"x": batches[0][0]}, step=0, attempt=0, mb=0, start=0, end=4))
    h.deliver("cl", Message.make("sw.fwd", {"x": batches[1][0], "t": batches[1][1]}, step=1, attempt=2, mb=0,
                                 start=0, end=4))  # a refused message superseded nothing: step 1 goes on
    replies = [s.msg for s in h.take_sent()]
    assert [m.kind for m in replies] == ["sw.err"] * 3 + ["sw.act"]
    assert "stale or duplicate commit of step 0" in replies[0].meta["reason"]
    assert "unknown step/micro-batch" in replies[1].meta["reason"] and "superseded" in replies[2].meta["reason"]
    assert h.node.refused == 3 and h.node.version == workspace.servers["s"].version == 1


def test_the_workspace_refuses_an_attempt_older_than_its_newest(setup):
    stack, batches, _ = setup
    workspace = TrainWorkspace.from_stack(stack, {"s": (0, 2)})
    x = batches[0][0]
    assert workspace.run(ForwardTask("s", 0, 2, 0, 0, 2, x)).problem is None
    assert "superseded" in workspace.run(ForwardTask("s", 0, 1, 0, 0, 2, x)).problem
    assert "not the next step" in workspace.run(ForwardTask("s", 3, 3, 0, 0, 2, x)).problem
