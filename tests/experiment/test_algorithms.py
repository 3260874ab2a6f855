"""Every algorithm a config can name runs end to end through the run store."""

import pytest

from meshlearn.errors import StoreError
from meshlearn.experiment.run import run_simulated
from meshlearn.experiment.schema import ExperimentConfig
from meshlearn.store import RunStore

SMALL = {"data": {"clients": 6, "partition": "shards", "open_size": 200}, "fl": {"rounds": 2, "epochs": 1},
         "decentral": {"epochs": 4, "eval_every": 2}, "tram": {"transmissions": 12, "eval_every": 4}}


def cfg(algorithm, **extra):
    data = {**SMALL, "name": algorithm, "fl": {**SMALL["fl"], "algorithm": algorithm}, **extra}
    return ExperimentConfig.model_validate(data)


@pytest.mark.parametrize("algorithm,rounds", [("dsfl", 2), ("fd", 2), ("cmfd", 4), ("gossip", 4), ("tram", 12)])
def test_algorithm_runs_to_completion_and_records_rounds(tmp_path, algorithm, rounds):
    out = run_simulated(cfg(algorithm), store=RunStore(tmp_path))
    assert out.completed and out.rounds == rounds
    table = out.run.metrics.round_table(["accuracy", "virtual_time"])
    assert table and table[-1]["round"] == rounds and 0 < table[-1]["accuracy"] <= 1
    assert out.run.reload()["status"] == "completed"


def test_decentralized_runs_refuse_resume_with_a_clear_message(tmp_path):
    store = RunStore(tmp_path)
    first = run_simulated(cfg("gossip"), store=store)
    first.run.save_checkpoint(2, {"x": __import__("numpy").zeros(1)}, {})
    with pytest.raises(StoreError, match="cannot be resumed"):
        run_simulated(None, store=store, resume=first.run.id)


@pytest.mark.parametrize("selector", ["fedcs", "mab", "oort"])
def test_selectors_run_from_the_config_with_fluctuating_resources(tmp_path, selector):
    c = ExperimentConfig.model_validate({"name": selector, "data": {"clients": 12}, "fl": {"rounds": 3, "epochs": 1},
                                         "selection": {"selector": selector, "clients_per_round": 4,
                                                       "dynamics": {"enabled": True, "period_s": 5.0}}})
    out = run_simulated(c, store=RunStore(tmp_path))
    table = out.run.metrics.round_table(["clients_selected"])
    assert out.completed and [r["clients_selected"] for r in table] == [4, 4, 4]


def test_dsfl_without_an_open_set_says_how_to_add_one(tmp_path):
    from meshlearn.errors import ConfigError

    c = ExperimentConfig.model_validate({"data": {"clients": 4}, "fl": {"algorithm": "dsfl"}})
    with pytest.raises(ConfigError, match="data.open_size"):
        run_simulated(c, store=RunStore(tmp_path))


def test_serve_refuses_peer_to_peer_algorithms_with_a_clear_message():
    from meshlearn.errors import UsageError
    from meshlearn.experiment.deploy import serve_runtime

    c = cfg("cmfd")
    with pytest.raises(UsageError, match="peer-to-peer"):
        serve_runtime(c, listen=("127.0.0.1", 0), secret=b"k")
