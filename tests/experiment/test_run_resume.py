"""Run store integration: an interrupted simulated run resumes at its last completed round."""

import pytest

from meshlearn.errors import ConfigError, DataError, StoreError
from meshlearn.experiment import run_experiment
from meshlearn.experiment.fl.schema import fl_config
from meshlearn.store import RunStore


def cfg(rounds=5):
    return fl_config({"name": "resume", "data": {"clients": 5}, "fl": {"rounds": rounds, "epochs": 1}})


def interrupt_at(n):
    def on_progress(report):
        if report.step == n:
            raise KeyboardInterrupt
    return on_progress


def rounds_of(run):
    return [row["round"] for row in run.metrics_reader().round_table(["accuracy", "virtual_time"])]


def test_interrupted_run_resumes_and_loses_no_completed_round(tmp_path):
    store = RunStore(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg(), store, progress=interrupt_at(3))
    run = store.open_run("latest")
    assert run.reload()["status"] == "interrupted"
    done, _, meta = run.latest_checkpoint()
    assert done == 2 and meta["virtual_time"] > 0

    resumed = run_experiment(None, store, resume=run.id)
    assert resumed.info["status"] == "completed" and resumed.info["completed_round"] == 5
    table = resumed.metrics.round_table(["accuracy", "virtual_time"])
    assert [row["round"] for row in table] == [1, 2, 3, 4, 5]  # round 3 redone once, never twice
    times = [row["virtual_time"] for row in table]
    assert times == sorted(times)  # the virtual clock continued from the checkpoint


def test_resuming_a_finished_run_changes_nothing(tmp_path):
    store = RunStore(tmp_path)
    first = run_experiment(cfg(rounds=2), store)
    again = run_experiment(None, store, resume=first.id)
    assert again.info["completed_round"] == 2 and rounds_of(again) == [1, 2]


def test_resume_applies_safe_overrides_and_refuses_the_rest(tmp_path):
    store = RunStore(tmp_path)
    first = run_experiment(cfg(rounds=2), store)
    more = run_experiment(None, store, resume=first.id, overrides=["fl.rounds=4"])
    assert more.info["status"] == "completed" and rounds_of(more) == [1, 2, 3, 4]
    assert "rounds = 4" in more.config_text()  # the stored config says what ran
    with pytest.raises(ConfigError, match="fl.lr: cannot change when resuming"):
        run_experiment(None, store, resume=first.id, overrides=["fl.lr=0.1"])


def test_a_run_whose_server_dies_for_good_stops_with_a_clear_error(tmp_path):
    c = fl_config({"name": "dead", "data": {"clients": 3}, "fl": {"rounds": 3, "epochs": 1},
                   "faults": {"crashes": [{"node": "server", "at": 0.0001}]}})
    with pytest.raises(StoreError, match="stopped at round 0 of 3"):
        run_experiment(c, RunStore(tmp_path))
    assert RunStore(tmp_path).open_run("latest").reload()["status"] == "stopped"


def test_a_run_that_fails_while_being_built_leaves_no_run_directory(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage")
    c = fl_config({"name": "bad", "data": {"dataset": "npz", "path": str(bad)}})
    with pytest.raises(DataError, match="bad.npz"):
        run_experiment(c, RunStore(tmp_path / "runs"))
    assert not (tmp_path / "runs").exists()


def test_a_run_writes_a_log_file_into_its_directory(tmp_path):
    run = run_experiment(cfg(rounds=2), RunStore(tmp_path))
    log = (run.path / "run.log").read_text()
    assert "step 1/2" in log and "step 2/2" in log
