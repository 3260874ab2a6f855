"""Resuming a real (small, simulated) FL run whose store was damaged (issue 12).

A damaged newest checkpoint is an announced fallback to an older one, never a silent restart or a run
that "completes" on NaN weights; a store that cannot be resumed is refused before anything changes.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from meshlearn.errors import StoreError
from meshlearn.experiment import run_experiment
from meshlearn.experiment.fl.schema import fl_config
from meshlearn.store import RunStore
from meshlearn.store import checkpoints as ckpt


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A completed 3-round run (5 clients, one epoch), checkpoints of rounds 1-3 on disk."""
    store = RunStore(tmp_path_factory.mktemp("finished"))
    cfg = fl_config({"name": "damaged", "data": {"clients": 5}, "fl": {"rounds": 3, "epochs": 1},
                     "faults": {"crashes": []}})
    return run_experiment(cfg, store).path


@pytest.fixture
def copy(finished, tmp_path):
    """A fresh copy of the finished run in its own store: (store, run id)."""
    shutil.copytree(finished, tmp_path / finished.name)
    return RunStore(tmp_path), finished.name


def rounds_stored(run) -> list[int]:
    return [r.round for r in run.metrics_reader().rows(key="accuracy") if r.node is None]


def fingerprint(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file() and p.suffix != ".log" and "-shm" not in p.name}


def nan_checkpoint(run, round: int) -> None:
    """Replace a checkpoint by one of NaN weights (a valid file, digest included: a diverged model)."""
    _, tensors, meta = ckpt.load_checkpoint(run.checkpoint_dir / ckpt.checkpoint_name(round))
    bad = {k: np.full_like(v, np.nan) if v.dtype.kind == "f" else v for k, v in tensors.items()}
    ckpt.save_checkpoint(run.checkpoint_dir, round, bad, meta)


def flip_byte(run, round: int) -> None:
    path = run.checkpoint_dir / ckpt.checkpoint_name(round)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage,reason", [(nan_checkpoint, "NaN or infinite"), (flip_byte, "sha256")])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one_and_says_so(copy, damage, reason):
    store, run_id = copy
    damage(store.open_run(run_id), 3)
    messages = []
    run = run_experiment(None, store, resume=run_id, overrides=["fl.rounds=4"],
                         progress=lambda p: messages.append(p.message) if p.message else None)
    assert any(reason in m and "falling back to the checkpoint of round 2" in m for m in messages), messages
    assert run.info["status"] == "completed" and rounds_stored(run) == [1, 2, 3, 4]  # round 3 redone once
    assert any(reason in w for w in run.info["warnings"])
    table = run.metrics_reader().round_table(["clients_completed", "accuracy"])
    assert [r["clients_completed"] for r in table] == [5, 5, 5, 5] and table[-1]["accuracy"] > 0.5


@pytest.mark.parametrize("how", ["truncated", "missing"])
def test_no_usable_checkpoint_refuses_the_resume_and_deletes_nothing(copy, how):
    store, run_id = copy
    run = store.open_run(run_id)
    if how == "missing":
        shutil.rmtree(run.checkpoint_dir)
    else:
        for _, path in ckpt.list_checkpoints(run.checkpoint_dir):
            path.write_bytes(path.read_bytes()[:64])
    before = fingerprint(run.path)
    with pytest.raises(StoreError, match="cannot be resumed.*nothing was changed"):
        run_experiment(None, store, resume=run_id, overrides=["fl.rounds=4"])
    assert fingerprint(run.path) == before and rounds_stored(store.open_run(run_id)) == [1, 2, 3]
    assert store.open_run(run_id).status == "completed"


def test_damaged_metrics_refuse_the_resume_and_change_nothing(copy):
    store, run_id = copy
    run = store.open_run(run_id)
    data = run.metrics_path.read_bytes()
    run.metrics_path.write_bytes(data[: len(data) // 2])
    before = fingerprint(run.path)
    with pytest.raises(StoreError, match="metrics database .* is damaged"):
        run_experiment(None, store, resume=run_id)
    assert fingerprint(run.path) == before
