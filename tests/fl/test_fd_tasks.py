"""The FD training task: per-label logits, the regulariser, validation."""

import numpy as np
import pytest
import torch

from meshlearn.data import load_dataset
from meshlearn.errors import UsageError
from meshlearn.learn import TASK_HANDLERS, TrainTask, Workspace, initial_params
from meshlearn.learn.fd_tasks import label_logits
from meshlearn.learn.tasks import FDTrainTask


@pytest.fixture(scope="module")
def ws():
    torch.set_num_threads(1)
    train, test = load_dataset("digits", seed=0)
    return Workspace(train, test, {"a": np.arange(200), "empty": np.arange(0)}, "mlp", {"hidden": (32,)}, 0)


def fd_task(ws, **kw):
    args = dict(client="a", params=initial_params(ws), teacher=np.zeros((10, 10), np.float32),
                teacher_mask=np.zeros(10, bool), beta=1.0, epochs=2, batch_size=16, lr=0.05, momentum=0.5, seed=3)
    return FDTrainTask(**{**args, **kw})


def test_label_logits_are_per_label_means_with_counts():
    logits = torch.tensor([[1.0, 2.0], [3.0, 4.0], [10.0, 0.0]])
    means, counts = label_logits(logits, torch.tensor([0, 0, 1]), 3)
    assert np.array_equal(counts, [2, 1, 0])
    assert np.allclose(means, [[2.0, 3.0], [10.0, 0.0], [0.0, 0.0]])


def test_with_no_teacher_fd_training_is_plain_cross_entropy_training(ws):
    fd = ws.run(fd_task(ws))
    plain = ws.run(TrainTask(client="a", params=initial_params(ws), epochs=2, batch_size=16, lr=0.05,
                             momentum=0.5, seed=3))
    assert all(np.array_equal(fd.params[k], plain.params[k]) for k in fd.params)
    assert fd.num_samples == 200 and fd.steps == plain.steps
    assert fd.label_counts.sum() == 200 and fd.label_logits.shape == (10, 10)


@pytest.mark.parametrize("loss", ["kl", "mse"])
def test_the_regulariser_pulls_label_logits_towards_the_teacher(ws, loss):
    base = ws.run(fd_task(ws, epochs=5))
    teacher = np.roll(base.label_logits, 1, axis=1)  # a teacher that disagrees with the client
    mask = base.label_counts > 0
    pulled = ws.run(fd_task(ws, epochs=5, teacher=teacher, teacher_mask=mask, beta=5.0, loss=loss, lr=0.02))
    gap = lambda r: np.abs(r.label_logits[mask] - teacher[mask]).mean()  # noqa: E731
    assert gap(pulled) < gap(base)
    assert np.all(np.isfinite(pulled.label_logits))


def test_a_client_without_data_returns_zero_counts(ws):
    res = ws.run(fd_task(ws, client="empty"))
    assert res.num_samples == 0 and res.steps == 0 and res.label_counts.sum() == 0 and np.isnan(res.loss)


def test_task_validates_and_is_registered(ws):
    assert "train_fd" in TASK_HANDLERS
    with pytest.raises(UsageError, match="teacher"):
        fd_task(ws, teacher=np.zeros((3, 3), np.float32))
    with pytest.raises(UsageError, match="loss"):
        fd_task(ws, loss="l1")
    with pytest.raises(UsageError):
        fd_task(ws, beta=-1.0)
    assert fd_task(ws).flops(ws) == ws.flops_per_sample * 200 * (3 * 2 + 1)
