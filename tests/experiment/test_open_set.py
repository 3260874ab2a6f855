"""The shared unlabelled set: held out from training, or loaded from a user file."""

import numpy as np
import pytest

from meshlearn.errors import ConfigError, DataError
from meshlearn.experiment.fl.build import build_workspace
from meshlearn.experiment.fl.schema import fl_config


def ws(**data):
    return build_workspace(fl_config({"data": {"clients": 5, **data}}))


def test_open_size_holds_samples_out_of_training_and_partitions():
    base, held = ws(), ws(open_size=300)
    assert len(held.open) == 300 and len(held.train) == len(base.train) - 300
    covered = np.concatenate(list(held.parts.values()))
    assert covered.max() < len(held.train)
    assert not any(np.array_equal(held.open.x[i], held.train.x[0]) for i in range(300))  # disjoint (spot check)


def test_open_set_is_seeded():
    assert np.array_equal(ws(open_size=100).open.x, ws(open_size=100).open.x)


def test_open_path_loads_a_user_file_and_checks_its_shape(tmp_path):
    np.savez(tmp_path / "u.npz", x=np.zeros((40, 1, 8, 8), np.float32))
    assert len(ws(open_path=str(tmp_path / "u.npz")).open) == 40
    np.savez(tmp_path / "bad.npz", x=np.zeros((40, 64), np.float32))
    with pytest.raises(DataError, match="shape"):
        ws(open_path=str(tmp_path / "bad.npz"))
    with pytest.raises(DataError, match="array 'x'"):
        np.savez(tmp_path / "nox.npz", y=np.zeros(3))
        ws(open_path=str(tmp_path / "nox.npz"))


def test_open_size_larger_than_training_set_is_a_config_error():
    with pytest.raises(ConfigError, match="data.open_size"):
        ws(open_size=100_000)


def test_npz_datasets_honour_test_fraction(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((1000, 4), dtype=np.float32), y=rng.integers(0, 3, 1000))
    half = ws(dataset="npz", path=str(tmp_path / "d.npz"), test_fraction=0.5)
    assert len(half.test) == 500


def test_file_dataset_without_path_gets_a_clean_message():
    from meshlearn.config import validate_config
    from meshlearn.experiment.fl.schema import config_model

    with pytest.raises(ConfigError) as err:
        validate_config(config_model(), {"data": {"dataset": "npz"}})
    assert "set data.path" in str(err.value) and "Value error" not in str(err.value)


def test_csv_label_column_and_standardize_come_from_the_config(tmp_path):
    rng = np.random.default_rng(0)
    rows = ["a,b,digit"] + [f"{x:.3f},{y:.3f},{int(x > 0.5)}" for x, y in rng.random((200, 2))]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    raw = ws(dataset="csv", path=str(tmp_path / "d.csv"), label_column="digit", standardize=False)
    assert raw.train.num_classes == 2 and raw.train.x.min() >= 0.0  # not standardized: the raw [0, 1) values
    scaled = ws(dataset="csv", path=str(tmp_path / "d.csv"), label_column="digit")
    assert scaled.train.x.min() < 0.0  # csv standardizes by default
    with pytest.raises(ConfigError, match="data.label_column is set but dataset 'digits' does not read it"):
        ws(label_column="digit")


def test_a_key_nothing_reads_any_more_is_an_unknown_key():
    with pytest.raises(ConfigError, match="selection.target_accuracy: unknown key"):
        fl_config({"selection": {"target_accuracy": 0.9}})
