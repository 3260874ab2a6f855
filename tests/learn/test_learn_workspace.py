"""Tasks run by a Workspace: accuracy on digits, FedProx, determinism, pickling, flops."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from meshlearn.data import Dataset, load_dataset, partition
from meshlearn.errors import ProtocolError, UsageError
from meshlearn.learn import (
    EvalResult,
    EvalTask,
    TrainResult,
    TrainTask,
    Workspace,
    initial_params,
    l2_distance,
)


@pytest.fixture(scope="module")
def digits() -> tuple[Dataset, Dataset]:
    return load_dataset("digits")


@pytest.fixture(scope="module")
def ws(digits) -> Workspace:
    train, test = digits
    parts = partition("dirichlet", train.y, 20, 0, alpha=0.5)
    clients = {f"c{i}": p for i, p in enumerate(parts)}
    clients["all"] = np.arange(len(train))
    clients["empty"] = np.zeros(0, np.int64)
    return Workspace(train, test, clients, "mlp", {"hidden": (64,)}, model_seed=0)


def _task(ws: Workspace, **overrides) -> TrainTask:
    fields = dict(client="c3", params=initial_params(ws), epochs=2, batch_size=16, lr=0.05, seed=1)
    return TrainTask(**(fields | overrides))


def test_mlp_on_full_digits_beats_90_percent(ws):
    p0 = initial_params(ws)
    assert ws.run(EvalTask(p0)).accuracy < 0.3
    result = ws.run(_task(ws, client="all", params=p0, epochs=5, batch_size=32, lr=0.05, momentum=0.9))
    assert isinstance(result, TrainResult) and result.num_samples == len(ws.train)
    assert result.steps == 5 * int(np.ceil(len(ws.train) / 32)) and result.loss < 0.3
    evaluation = ws.run(EvalTask(result.params, batch_size=100))
    assert isinstance(evaluation, EvalResult) and evaluation.num_samples == len(ws.test)
    assert evaluation.accuracy > 0.9 and evaluation.loss < 0.5


def test_same_task_gives_bit_identical_result(ws):
    task = _task(ws, momentum=0.9, weight_decay=1e-4, prox_mu=0.1)
    first = ws.run(task)
    ws.run(_task(ws, client="c5", seed=9))  # cached model used for something else in between
    second = ws.run(task)
    assert first.loss == second.loss and first.steps == second.steps
    assert all(np.array_equal(first.params[k], second.params[k]) for k in first.params)
    other = ws.run(_task(ws, momentum=0.9, weight_decay=1e-4, prox_mu=0.1, seed=2))
    assert l2_distance(first.params, other.params) > 0


def test_task_runs_identically_in_an_unpickled_workspace(ws):
    task = _task(ws)
    clone = pickle.loads(pickle.dumps(ws))
    moved = pickle.loads(pickle.dumps(task))
    here, there = ws.run(task), clone.run(moved)
    assert all(np.array_equal(here.params[k], there.params[k]) for k in here.params)
    assert "_model" not in pickle.loads(pickle.dumps(ws)).__getstate__()


def test_fedprox_large_mu_stays_near_global(ws):
    p0 = initial_params(ws)
    free = ws.run(_task(ws, params=p0, epochs=5, lr=0.05))
    # lr * mu = 1: each step pulls w all the way back to the global params (lr * mu >= 2 diverges)
    prox = ws.run(_task(ws, params=p0, epochs=5, lr=0.05, prox_mu=20.0))
    assert l2_distance(prox.params, p0) < 0.25 * l2_distance(free.params, p0)


def test_wrong_shape_params_raise_protocol_error(ws):
    params = initial_params(ws)
    params["1.weight"] = params["1.weight"][:, :10]
    with pytest.raises(ProtocolError, match=r"1.weight has shape \(64, 10\), expected \(64, 64\)"):
        ws.run(_task(ws, params=params))
    with pytest.raises(ProtocolError):
        ws.run(EvalTask(params))


def test_empty_client_and_zero_epochs_return_params_unchanged(ws):
    p0 = initial_params(ws)
    for task in (_task(ws, client="empty"), _task(ws, epochs=0)):
        result = ws.run(task)
        assert result.steps == 0 and np.isnan(result.loss) and l2_distance(result.params, p0) == 0


def test_flops_and_sample_counts(ws):
    n = ws.num_samples("c3")
    assert ws.flops_per_sample == 2 * (64 * 64 + 64 * 10)
    assert _task(ws, epochs=4).flops(ws) == 3 * ws.flops_per_sample * n * 4
    assert EvalTask(initial_params(ws)).flops(ws) == ws.flops_per_sample * len(ws.test)


def test_bad_tasks_and_clients(ws):
    with pytest.raises(UsageError, match="lr > 0"):
        _task(ws, lr=0.0)
    with pytest.raises(UsageError, match="batch_size"):
        EvalTask(initial_params(ws), batch_size=0)
    with pytest.raises(UsageError, match="unknown client 'nobody'"):
        ws.run(_task(ws, client="nobody"))
    with pytest.raises(UsageError, match="valid: .*evaluate.*train"):
        ws.run(object())
    with pytest.raises(UsageError, match="indices"):
        Workspace(ws.train, ws.test, {"x": np.array([len(ws.train)])}, "mlp", {}, 0)


def test_initial_params_match_model_seed(ws):
    again = Workspace(ws.train, ws.test, ws.parts, "mlp", {"hidden": (64,)}, model_seed=0)
    other = Workspace(ws.train, ws.test, ws.parts, "mlp", {"hidden": (64,)}, model_seed=1)
    assert l2_distance(initial_params(ws), initial_params(again)) == 0
    assert l2_distance(initial_params(ws), initial_params(other)) > 0


def test_tasks_are_frozen(ws):
    task = _task(ws)
    with pytest.raises(AttributeError):
        task.lr = 1.0  # type: ignore[misc]
    assert task.kind == "train" and EvalTask(task.params).kind == "evaluate"
