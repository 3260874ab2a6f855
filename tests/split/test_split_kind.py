"""The split experiment kind: each study from one config, settings nothing reads refused, files into the run."""

import json

import pytest

from meshlearn.config import validate_config
from meshlearn.errors import ConfigError, UsageError
from meshlearn.experiment import run_experiment
from meshlearn.experiment.split import check, config_model
from meshlearn.store import RunStore

torch = pytest.importorskip("torch")


def cfg(**data):
    return validate_config(config_model(), {"kind": "split", **data})


@pytest.fixture(autouse=True)
def _threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)  # studies run torch on one thread


def test_a_study_reads_only_its_section_and_what_it_uses():
    check(cfg(study="infer", channel={"quant": "fp32"}, infer={"loss": 0.2}))  # infer reads the channel
    with pytest.raises(ConfigError, match="channel: not read by study 'bandit'"):
        check(cfg(study="bandit", channel={"quant": "fp32"}))
    with pytest.raises(ConfigError, match="tune: not read by study 'infer'"):
        check(cfg(study="infer", tune={"p": 0.3}))
    with pytest.raises(ConfigError, match="unknown split study 'predict'"):
        cfg(study="predict")


def test_train_then_tune_write_their_model_files_into_the_run_and_results_json(tmp_path):
    store = RunStore(tmp_path / "runs")
    train = run_experiment(cfg(study="train", train={"epochs": 1, "cut": "pool2", "batch_norm": True}), store)
    model = train.path / "model.safetensors"
    assert train.info["status"] == "completed" and model.is_file()
    assert json.loads((train.path / "results.json").read_text())["cut_shape"] == [32, 4, 4]
    tuned = run_experiment(cfg(study="tune", model=str(model), channel={"elements_per_packet": 16},
                               tune={"p": 0.5, "epochs": 1}), store)
    result = json.loads((tuned.path / "results.json").read_text())
    assert (tuned.path / "tuned.safetensors").is_file() and result["packets"] == 32
    assert {row.key for row in tuned.metrics.rows()} >= {"tune.packets", "tune.after_pct.0.5"}


def test_a_missing_model_file_is_refused_before_a_run_exists(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        run_experiment(cfg(study="infer", model=str(tmp_path / "nope.safetensors")), RunStore(tmp_path / "runs"))
    assert not (tmp_path / "runs").exists()
