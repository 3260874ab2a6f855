"""DS-FL nodes driven by hand through a fake context (no simulator): task chains and hostile input."""

import numpy as np
import pytest

from meshlearn.errors import ProtocolError
from meshlearn.fl import dsfl
from meshlearn.fl.dsfl import DSFLSettings
from meshlearn.fl.server import RoundSettings
from meshlearn.fl.softlabels import check_indices, encode_soft
from meshlearn.learn import PredictResult, TrainResult
from meshlearn.wire import Message

PARAMS = {"w": np.zeros((2, 2), np.float32)}
META = dict(round=1, epochs=1, batch_size=4, lr=0.1, momentum=0.0, weight_decay=0.0, distill_epochs=1,
            distill_lr=0.1, distill_batch_size=4, distill_momentum=0.0, encoding="fp32", evaluate=False, seed=7)


class FakeCtx:
    """Records what a node does; tasks finish only when the test says so."""

    def __init__(self, node_id):
        self.node_id, self.rng, self.now = node_id, np.random.default_rng(0), 0.0
        self.tx_bytes = self.rx_bytes = 0
        self.sent, self.tasks, self.logs, self.records, self.timers = [], [], [], [], {}

    def send(self, dst, msg, *, reliable=True):
        self.sent.append((dst, msg))
        return 1

    def set_timer(self, name, delay):
        self.timers[name] = delay

    def cancel_timer(self, name):
        self.timers.pop(name, None)

    def submit(self, task):
        self.tasks.append(task)
        return len(self.tasks)

    def record(self, key, value, *, round=None, per_node=False):
        self.records.append((key, value, round))

    def checkpoint(self, round, tensors, meta):
        pass

    def log(self, text, *, level="info"):
        self.logs.append(text)

    def stop(self):
        pass


def started_client(num_open=10):
    client, ctx = dsfl.DSFLClient("c", "server", PARAMS, num_open), FakeCtx("c")
    client.on_start(ctx)
    return client, ctx


def test_first_round_trains_then_predicts_then_uploads():
    client, ctx = started_client()
    client.on_message(ctx, "server", Message(dsfl.ROUND, META, {"indices": np.array([1, 3], np.int32)}))
    assert [t.kind for t in ctx.tasks] == ["train"]
    client.on_task_done(ctx, 1, TrainResult({"w": np.ones((2, 2), np.float32)}, 5, 0.5, 2))
    assert [t.kind for t in ctx.tasks] == ["train", "predict"] and ctx.tasks[1].params["w"][0, 0] == 1.0
    probs = np.array([[0.25, 0.75], [0.5, 0.5]], np.float32)
    client.on_task_done(ctx, 2, PredictResult(probs, probs))
    dst, msg = ctx.sent[-1]
    assert dst == "server" and msg.kind == dsfl.UPLOAD and msg.meta == {"round": 1, "num_samples": 5, "loss": 0.5}
    assert np.array_equal(msg.tensors["probs"], probs) and client.task_id is None


def test_later_rounds_distil_on_the_previous_aggregate_first():
    client, ctx = started_client()
    prev = {"prev_indices": np.array([0, 2], np.int32), **encode_soft(np.full((2, 2), 0.5, np.float32), "simplex8")}
    client.on_message(ctx, "server", Message(dsfl.ROUND, META, {"indices": np.array([4], np.int32), **prev}))
    task = ctx.tasks[0]
    assert task.kind == "distill" and list(task.indices) == [0, 2] and np.allclose(task.targets, 0.5)
    client.on_task_done(ctx, 99, None)  # a stale task id: ignored
    assert len(ctx.tasks) == 1


def test_a_new_round_abandons_the_chain_in_progress():
    client, ctx = started_client()
    client.on_message(ctx, "server", Message(dsfl.ROUND, META, {"indices": np.array([1], np.int32)}))
    client.on_message(ctx, "server", Message(dsfl.ROUND, {**META, "round": 2}, {"indices": np.array([2], np.int32)}))
    client.on_task_done(ctx, 1, TrainResult(PARAMS, 5, 0.5, 2))  # the round-1 task finishing late
    assert len(ctx.tasks) == 2 and client.task_round == 2


def test_malformed_round_messages_raise_protocol_errors_and_start_nothing():
    client, ctx = started_client(num_open=10)
    bad = [Message(dsfl.ROUND, {"round": 1}, {"indices": np.array([1], np.int32)}),
           Message(dsfl.ROUND, META, {"indices": np.array([10], np.int32)}),
           Message(dsfl.ROUND, META, {"indices": np.array([[1]], np.int32)}),
           Message(dsfl.ROUND, META, {"indices": np.array([1], np.int32), "prev_indices": np.array([1], np.int32)}),
           Message(dsfl.ROUND, META, {"indices": np.array([1], np.int32), "prev_indices": np.array([1, 2], np.int32),
                                      **encode_soft(np.full((3, 2), 0.5))}),
           Message(dsfl.ROUND, {**META, "encoding": "int8"}, {"indices": np.array([1], np.int32)})]
    reasons = []
    for msg in bad:
        with pytest.raises(ProtocolError) as err:  # the runtime logs and counts it as a peer error
            client.on_message(ctx, "server", msg)
        reasons.append(str(err.value))
    client.on_message(ctx, "mallory", Message(dsfl.ROUND, META, {"indices": np.array([1], np.int32)}))
    assert ctx.tasks == [] and any("not my server" in line for line in ctx.logs)
    assert reasons[0].startswith("meta lacks")


def test_server_ignores_uploads_from_strangers_and_for_other_rounds():
    server = dsfl.DSFLServer("server", PARAMS, RoundSettings(rounds=2), DSFLSettings(), 10, 2)
    ctx = FakeCtx("server")
    server.on_start(ctx)
    server.on_message(ctx, "a", Message(dsfl.JOIN, {}))
    (dst, msg), = ctx.sent
    assert dst == "a" and msg.kind == dsfl.ROUND and len(msg.tensors["indices"]) == 10
    upload = Message(dsfl.UPLOAD, {"round": 2, "num_samples": 3}, encode_soft(np.full((10, 2), 0.5)))
    server.on_message(ctx, "a", upload)
    server.on_message(ctx, "b", Message(dsfl.UPLOAD, {**upload.meta, "round": 1}, upload.tensors))
    assert server.round.updates == {} and sum("late or unexpected" in line for line in ctx.logs) == 2
    server.on_message(ctx, "a", Message(dsfl.UPLOAD, {**upload.meta, "round": 1}, upload.tensors))
    assert [t.kind for t in ctx.tasks] == ["distill"]  # all selected replied: aggregate, distil, then evaluate


@pytest.mark.parametrize("bad", [{}, {"i": np.array([0.5])}, {"i": np.array([-1])}, {"i": np.array([10])}])
def test_check_indices_accepts_open_set_row_numbers_only(bad):
    assert check_indices({"i": np.array([0, 9], np.int32)}, "i", 10).dtype == np.int64
    with pytest.raises(ProtocolError):
        check_indices(bad, "i", 10)
