"""Every algorithm a config can name runs end to end through the run store, and the config says what it reads."""

import numpy as np
import pytest

from meshlearn.errors import ConfigError, StoreError, UsageError
from meshlearn.experiment import run_experiment
from meshlearn.experiment.fl.kind import check
from meshlearn.experiment.fl.schema import fl_config
from meshlearn.store import RunStore

SECTIONS = {"decentral": {"epochs": 4, "eval_every": 2}, "tram": {"transmissions": 12, "eval_every": 4}}
USES = {"cmfd": "decentral", "gossip": "decentral", "tram": "tram"}


def cfg(algorithm, **extra):
    fl = {"algorithm": algorithm} if algorithm in USES else {"algorithm": algorithm, "rounds": 2, "epochs": 1}
    data = {"clients": 6, "partition": "shards", **({"open_size": 200} if algorithm in ("dsfl", "cmfd") else {})}
    section = {USES[algorithm]: SECTIONS[USES[algorithm]]} if algorithm in USES else {}
    return fl_config({"name": algorithm, "data": data, "fl": fl, **section, **extra})


@pytest.mark.parametrize("algorithm,rounds", [("dsfl", 2), ("fd", 2), ("cmfd", 4), ("gossip", 4), ("tram", 12)])
def test_algorithm_runs_to_completion_and_records_rounds(tmp_path, algorithm, rounds):
    run = run_experiment(cfg(algorithm), RunStore(tmp_path))
    assert run.info["status"] == "completed" and run.info["completed_round"] == rounds
    table = run.metrics.round_table(["accuracy", "virtual_time"])
    assert table and table[-1]["round"] == rounds and 0 < table[-1]["accuracy"] <= 1


@pytest.mark.parametrize("algorithm", ["gossip", "tram", "fedavg"])
def test_summary_and_compare_count_every_wire_byte_of_server_and_peer_runs(tmp_path, algorithm):
    from meshlearn.experiment.fl.kind import headline, summary

    run = run_experiment(cfg(algorithm), RunStore(tmp_path))
    rows = run.metrics.round_table(["bytes_up", "bytes_down", "bytes_total"])
    per_row = [r.get("bytes_total", r.get("bytes_up", 0) + r.get("bytes_down", 0)) for r in rows]
    assert len(per_row) > 1 and all(b > 0 for b in per_row)  # each row counts its own bytes, not a running total
    assert headline(run, 0.9)["wire bytes"] == int(sum(per_row))
    shown = dict(summary(run))
    if algorithm == "fedavg":
        assert shown["bytes up (total)"] == f"{sum(r['bytes_up'] for r in rows):,.0f}"
    else:
        assert shown["wire bytes (total)"] == f"{int(sum(per_row)):,}" and "bytes up (total)" not in shown


def test_decentralized_runs_refuse_resume_with_a_clear_message(tmp_path):
    store = RunStore(tmp_path)
    first = run_experiment(cfg("gossip"), store)
    first.save_checkpoint(2, {"x": np.zeros(1)}, {})
    with pytest.raises(StoreError, match="cannot be resumed"):
        run_experiment(None, store, resume=first.id)


@pytest.mark.parametrize("algorithm", ["fedavg", "dsfl", "fd"])
@pytest.mark.parametrize("selector", ["fedcs", "mab", "oort"])
def test_every_selector_runs_with_every_server_based_algorithm(tmp_path, algorithm, selector):
    c = cfg(algorithm, selection={"selector": selector, "dynamics": {"enabled": True, "period_s": 5.0}})
    c = c.model_copy(update={"fl": c.fl.model_copy(update={"rounds": 3, "clients_per_round": 4})})
    run = run_experiment(c, RunStore(tmp_path))
    table = run.metrics.round_table(["clients_selected"])
    assert run.info["status"] == "completed" and [r["clients_selected"] for r in table] == [4, 4, 4]


def test_distillation_without_an_open_set_says_how_to_add_one(tmp_path):
    c = fl_config({"data": {"clients": 4}, "fl": {"algorithm": "dsfl"}})
    with pytest.raises(ConfigError, match="data.open_size"):
        run_experiment(c, RunStore(tmp_path))
    assert not tmp_path.joinpath("x").exists() and not list(tmp_path.iterdir())  # no run folder left behind


@pytest.mark.parametrize("data,key", [
    ({"fl": {"algorithm": "cmfd"}, "data": {"open_size": 100}, "network": {"uplink_loss": {"model": "bernoulli", "p": 0.1}}},
     "network.uplink_loss"),
    ({"fl": {"algorithm": "gossip", "rounds": 7}}, "fl"),
    ({"fl": {"algorithm": "tram"}, "selection": {"selector": "mab"}}, "selection"),
    ({"fl": {"algorithm": "fedavg"}, "network": {"topology": "star"}}, "network.topology"),
    ({"fl": {"algorithm": "fedavg"}, "tram": {"lr": 0.1}}, "tram"),
])
def test_settings_the_algorithm_never_reads_are_an_error_naming_the_key(data, key):
    with pytest.raises(ConfigError) as err:
        check(fl_config(data))
    assert err.value.key == key and str(err.value).startswith(f"{key}: ")


def test_a_selector_section_of_another_selector_is_rejected():
    with pytest.raises(ConfigError, match="selection.oort"):
        fl_config({"selection": {"selector": "fedcs", "oort": {"alpha": 1.0}}})


def test_serve_refuses_peer_to_peer_algorithms_with_a_clear_message():
    from meshlearn.experiment.fl.deploy import serve_runtime

    with pytest.raises(UsageError, match="peer-to-peer"):
        serve_runtime(cfg("cmfd"), listen=("127.0.0.1", 0), secret=b"k")
