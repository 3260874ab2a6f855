"""Dataset container, digits, npz and csv loaders, load_dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import meshlearn.data as data
from meshlearn.data import DATASETS, Dataset, load_dataset, stratified_split
from meshlearn.errors import DataError, RegistryError, UsageError


@pytest.fixture(scope="module")
def digits() -> tuple[Dataset, Dataset]:
    return load_dataset("digits")


def test_public_api_is_explicit():
    for name in data.__all__:
        assert hasattr(data, name)
    assert {"digits", "mnist_idx", "fashion_mnist_idx", "npz", "csv"} <= set(DATASETS.names())


def test_digits_shapes_dtypes_and_split(digits):
    train, test = digits
    assert train.x.shape[1:] == test.x.shape[1:] == (1, 8, 8) == train.input_shape
    assert train.x.dtype == np.float32 and train.y.dtype == np.int64
    assert len(train) + len(test) == 1797 and abs(len(test) - 0.2 * 1797) < 10
    assert train.num_classes == 10 and set(np.unique(test.y)) == set(range(10))
    # stratified: every class has about 20 % of its members in test
    assert np.bincount(test.y).min() >= 35


def test_digits_standardized_with_train_statistics(digits):
    train, test = digits
    assert abs(float(train.x.mean())) < 1e-4 and abs(float(train.x.std()) - 1) < 1e-3
    assert np.all(np.isfinite(test.x)) and -1.0 < test.x.min() < 0 < 1.0 < test.x.max() < 3.0


def test_digits_deterministic_and_seed_dependent(digits):
    again, _ = load_dataset("digits", seed=0)
    other, _ = load_dataset("digits", seed=1)
    assert np.array_equal(again.x, digits[0].x) and np.array_equal(again.y, digits[0].y)
    assert not np.array_equal(other.y, digits[0].y)


def test_subset_keeps_metadata(digits):
    sub = digits[0].subset(np.array([3, 1, 2]))
    assert len(sub) == 3 and sub.num_classes == 10 and sub.name == "digits"
    assert np.array_equal(sub.x[0], digits[0].x[3])


def test_dataset_rejects_bad_labels():
    with pytest.raises(UsageError):
        Dataset(np.zeros((2, 3)), np.array([0, 5]), 3, "bad")
    with pytest.raises(UsageError):
        Dataset(np.zeros((2, 3)), np.array([0]), 3, "bad")


def test_load_dataset_unknown_name_and_param():
    with pytest.raises(RegistryError, match="digits"):
        load_dataset("cifar")
    with pytest.raises(UsageError, match="test_fraction"):
        load_dataset("digits", test_frac=0.1)
    with pytest.raises(UsageError, match="path"):
        load_dataset("npz")
    with pytest.raises(UsageError):
        load_dataset("digits", test_fraction=1.5)


def test_stratified_split_is_disjoint_and_covering():
    y = np.repeat(np.arange(4), [10, 20, 1, 5])
    tr, te = stratified_split(y, 0.2, seed=3)
    assert np.array_equal(np.sort(np.concatenate([tr, te])), np.arange(len(y)))
    assert list(np.bincount(y[te], minlength=4)) == [2, 4, 0, 1]


# ------------------------------------------------------------------ npz


def test_npz_with_explicit_split(tmp_path: Path):
    rng = np.random.default_rng(0)
    path = tmp_path / "toy.npz"
    np.savez(path, x_train=rng.integers(0, 256, (6, 4, 4), dtype=np.uint8), y_train=np.array([0, 1, 2, 0, 1, 2]),
             x_test=rng.integers(0, 256, (3, 4, 4), dtype=np.uint8), y_test=np.array([2, 1, 0]))
    train, test = load_dataset("npz", path=str(path))
    assert train.x.shape == (6, 1, 4, 4) and test.x.shape == (3, 1, 4, 4)
    assert 0.0 <= train.x.min() and train.x.max() <= 1.0
    assert train.num_classes == 3 and train.name == "toy"


def test_npz_with_xy_split_and_standardize(tmp_path: Path):
    rng = np.random.default_rng(0)
    path = tmp_path / "tab.npz"
    np.savez(path, x=rng.normal(5, 3, (100, 7)), y=np.arange(100) % 4)
    train, test = load_dataset("npz", path=str(path), test_fraction=0.25, standardize=True)
    assert train.x.shape == (75, 7) and test.x.shape == (25, 7)
    assert np.allclose(train.x.mean(axis=0), 0, atol=1e-5)


def test_npz_missing_keys_lists_found_keys(tmp_path: Path):
    path = tmp_path / "bad.npz"
    np.savez(path, images=np.zeros((2, 2)), labels=np.zeros(2))
    with pytest.raises(DataError, match=r"images.*labels.*x_train"):
        load_dataset("npz", path=str(path))


def test_npz_bad_inputs(tmp_path: Path):
    with pytest.raises(DataError, match="not found"):
        load_dataset("npz", path=str(tmp_path / "nope.npz"))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cannot read"):
        load_dataset("npz", path=str(tmp_path / "junk.npz"))
    np.savez(tmp_path / "neg.npz", x=np.zeros((4, 2)), y=np.array([0, -1, 1, 0]))
    with pytest.raises(DataError, match="non-negative"):
        load_dataset("npz", path=str(tmp_path / "neg.npz"))
    np.savez(tmp_path / "len.npz", x=np.zeros((4, 2)), y=np.array([0, 1, 1]))
    with pytest.raises(DataError, match="rows"):
        load_dataset("npz", path=str(tmp_path / "len.npz"))


# ------------------------------------------------------------------ csv


def _write_csv(path: Path, rows: list[str]) -> str:
    path.write_text("\n".join(rows) + "\n")
    return str(path)


def test_csv_loads_and_standardizes(tmp_path: Path):
    rows = ["a,label,b"] + [f"{i},{i % 3},{2 * i + 1}" for i in range(30)]
    train, test = load_dataset("csv", path=_write_csv(tmp_path / "t.csv", rows), test_fraction=0.2, seed=1)
    assert train.x.shape == (24, 2) and test.x.shape == (6, 2) and train.num_classes == 3
    assert np.allclose(train.x.mean(axis=0), 0, atol=1e-5)
    raw, _ = load_dataset("csv", path=str(tmp_path / "t.csv"), standardize=False)
    assert raw.x.max() > 10


def test_csv_non_numeric_cell_names_row_and_column(tmp_path: Path):
    path = _write_csv(tmp_path / "t.csv", ["x,label", "1,0", "2,1", "oops,0"])
    with pytest.raises(DataError, match=r"row 4, column 'x': 'oops'"):
        load_dataset("csv", path=path)


def test_csv_bad_inputs(tmp_path: Path):
    with pytest.raises(DataError, match=r"no column 'label'.*x, y"):
        load_dataset("csv", path=_write_csv(tmp_path / "a.csv", ["x,y", "1,2"]))
    with pytest.raises(DataError, match="row 3 has 1 cells"):
        load_dataset("csv", path=_write_csv(tmp_path / "b.csv", ["x,label", "1,0", "2"]))
    with pytest.raises(DataError, match="no data rows"):
        load_dataset("csv", path=_write_csv(tmp_path / "c.csv", ["x,label"]))
    with pytest.raises(DataError, match="non-negative integers"):
        load_dataset("csv", path=_write_csv(tmp_path / "d.csv", ["x,label", "1,0.5", "2,1"]))
    with pytest.raises(DataError, match="not found"):
        load_dataset("csv", path=str(tmp_path / "missing.csv"))
