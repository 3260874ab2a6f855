"""Run store integration: an interrupted simulated run resumes at its last completed round."""

import pytest

from meshlearn.experiment.run import run_simulated
from meshlearn.experiment.schema import ExperimentConfig
from meshlearn.store import RunStore


def cfg(rounds=5):
    return ExperimentConfig.model_validate({"name": "resume", "data": {"clients": 5},
                                            "fl": {"rounds": rounds, "epochs": 1}})


def interrupt_at(n):
    def on_round(rnd, metrics):
        if rnd == n:
            raise KeyboardInterrupt
    return on_round


def test_interrupted_run_resumes_and_loses_no_completed_round(tmp_path):
    store = RunStore(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run_simulated(cfg(), store=store, on_round=interrupt_at(3))
    run = store.open_run("latest")
    assert run.reload()["status"] == "interrupted"
    done, _, meta = run.latest_checkpoint()
    assert done == 2 and meta["virtual_time"] > 0

    outcome = run_simulated(None, store=store, resume=run.id)
    assert outcome.completed and outcome.rounds == 5
    table = outcome.run.metrics.round_table(["accuracy", "virtual_time"])
    assert [row["round"] for row in table] == [1, 2, 3, 4, 5]  # round 3 redone once, never twice
    times = [row["virtual_time"] for row in table]
    assert times == sorted(times)  # the virtual clock continued from the checkpoint
    assert outcome.run.reload()["status"] == "completed"


def test_resuming_a_finished_run_changes_nothing(tmp_path):
    store = RunStore(tmp_path)
    first = run_simulated(cfg(rounds=2), store=store)
    again = run_simulated(None, store=store, resume=first.run.id)
    assert again.rounds == 2
    assert [r["round"] for r in again.run.metrics.round_table(["accuracy"])] == [1, 2]


def test_a_run_whose_server_dies_for_good_stops_with_a_clear_error(tmp_path):
    from meshlearn.errors import StoreError

    c = ExperimentConfig.model_validate({"name": "dead", "data": {"clients": 3}, "fl": {"rounds": 3, "epochs": 1},
                                         "faults": {"crashes": [{"node": "server", "at": 0.0001}]}})
    with pytest.raises(StoreError, match="stalled at round 0 of 3"):
        run_simulated(c, store=RunStore(tmp_path))
    assert RunStore(tmp_path).open_run("latest").reload()["status"] == "stopped"


def test_a_run_that_fails_while_being_built_is_marked_failed(tmp_path):
    from meshlearn.errors import DataError

    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage")
    c = ExperimentConfig.model_validate({"name": "bad", "data": {"dataset": "npz", "path": str(bad)}})
    with pytest.raises(DataError):
        run_simulated(c, store=RunStore(tmp_path / "runs"))
    info = RunStore(tmp_path / "runs").open_run("latest").reload()
    assert info["status"] == "failed" and "bad.npz" in info["error"]
