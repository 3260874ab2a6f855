"""Predict and distill tasks on the open (unlabelled) set."""

import numpy as np
import pytest

from meshlearn.data import load_dataset
from meshlearn.errors import UsageError
from meshlearn.learn import DistillTask, PredictTask, Workspace, initial_params


@pytest.fixture(scope="module")
def ws():
    train, test = load_dataset("digits", seed=0)
    open_set = train.subset(np.arange(400))
    return Workspace(train.subset(np.arange(400, len(train))), test, {"a": np.arange(100)}, "mlp",
                     {"hidden": (32,)}, 0, open=open_set)


def agreement(ws, params, idx):
    probs = ws.run(PredictTask(params, idx)).probs
    return float((probs.argmax(1) == ws.open.y[idx]).mean())


@pytest.mark.parametrize("loss", ["kl", "mse"])
def test_distilling_towards_true_labels_teaches_the_model(ws, loss):
    idx = np.arange(300)
    targets = np.eye(10, dtype=np.float32)[ws.open.y[idx]]
    p0 = initial_params(ws)
    lr, momentum = (0.1, 0.9) if loss == "kl" else (1.0, 0.5)  # MSE on softmax has small gradients
    res = ws.run(DistillTask(client="a", params=p0, indices=idx, targets=targets, loss=loss, epochs=10,
                             batch_size=32, lr=lr, momentum=momentum, seed=1))
    assert res.num_samples == 300 and res.steps == 10 * 10
    assert agreement(ws, res.params, idx) > agreement(ws, p0, idx) + 0.5


def test_predict_returns_probability_rows_and_is_deterministic(ws):
    idx = np.array([5, 1, 9])
    a, b = ws.run(PredictTask(initial_params(ws), idx)), ws.run(PredictTask(initial_params(ws), idx))
    assert a.probs.shape == (3, 10) and np.allclose(a.probs.sum(1), 1, atol=1e-5)
    assert np.array_equal(a.probs, b.probs) and np.array_equal(a.logits, b.logits)


def test_distill_is_deterministic_and_validates(ws):
    idx = np.arange(50)
    t = np.full((50, 10), 0.1, np.float32)
    mk = lambda: DistillTask(client="a", params=initial_params(ws), indices=idx, targets=t, seed=3)
    r1, r2 = ws.run(mk()), ws.run(mk())
    assert all(np.array_equal(r1.params[k], r2.params[k]) for k in r1.params)
    with pytest.raises(UsageError):
        DistillTask(client="a", params={}, indices=idx, targets=t[:10], seed=0)
    with pytest.raises(UsageError):
        DistillTask(client="a", params={}, indices=idx, targets=t, loss="l1", seed=0)


def test_workspace_without_open_set_says_how_to_get_one():
    train, test = load_dataset("digits", seed=0)
    ws = Workspace(train, test, {"a": np.arange(10)}, "mlp")
    with pytest.raises(UsageError, match="open_size"):
        ws.run(PredictTask(initial_params(ws), np.arange(3)))
