"""IDX parsing and the MNIST / Fashion-MNIST directory loaders, on tiny synthetic files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from meshlearn.data import load_dataset, read_idx
from meshlearn.data.idx import IDX_FILES
from meshlearn.errors import DataError


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def _write_mnist(directory: Path, n_train: int = 12, n_test: int = 5, gz: tuple[str, ...] = ()) -> None:
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28)),
        "train_labels": np.arange(n_train) % 10,
        "test_images": rng.integers(0, 256, (n_test, 28, 28)),
        "test_labels": np.arange(n_test) % 10,
    }
    for role, array in arrays.items():
        name, raw = IDX_FILES[role], _idx_bytes(array)
        if role in gz:
            (directory / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (directory / name).write_bytes(raw)


def test_read_idx_roundtrip_and_other_dtypes(tmp_path: Path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(_idx_bytes(array))
    assert np.array_equal(read_idx(tmp_path / "a"), array)
    floats = np.linspace(-1, 1, 6).reshape(3, 2)
    raw = bytes([0, 0, 0x0D, 2]) + np.asarray([3, 2], ">u4").tobytes() + floats.astype(">f4").tobytes()
    (tmp_path / "f").write_bytes(raw)
    out = read_idx(tmp_path / "f")
    assert out.dtype == np.float32 and out.dtype.byteorder in "=<|" and np.allclose(out, floats)


def test_mnist_idx_loads_plain_and_gz(tmp_path: Path):
    _write_mnist(tmp_path, gz=("train_images", "test_labels"))
    train, test = load_dataset("mnist_idx", path=str(tmp_path))
    assert train.x.shape == (12, 1, 28, 28) and test.x.shape == (5, 1, 28, 28)
    assert train.x.dtype == np.float32 and 0.0 <= train.x.min() and train.x.max() <= 1.0
    assert list(test.y) == [0, 1, 2, 3, 4] and train.num_classes == 10 and train.name == "mnist"
    fashion, _ = load_dataset("fashion_mnist_idx", path=str(tmp_path))
    assert fashion.name == "fashion_mnist" and np.array_equal(fashion.x, train.x)


def test_corrupt_magic_raises(tmp_path: Path):
    _write_mnist(tmp_path)
    path = tmp_path / IDX_FILES["train_labels"]
    raw = bytearray(path.read_bytes())
    raw[2] = 0x42
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="magic"):
        load_dataset("mnist_idx", path=str(tmp_path))


def test_truncated_body_and_bad_gzip_raise(tmp_path: Path):
    _write_mnist(tmp_path)
    path = tmp_path / IDX_FILES["test_images"]
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match="truncated"):
        load_dataset("mnist_idx", path=str(tmp_path))
    (tmp_path / "x.gz").write_bytes(b"definitely not gzip")
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path / "x.gz")


def test_label_count_mismatch_raises(tmp_path: Path):
    _write_mnist(tmp_path)
    (tmp_path / IDX_FILES["test_labels"]).write_bytes(_idx_bytes(np.arange(4)))
    with pytest.raises(DataError, match=r"t10k-images.*\(5, 28, 28\).*\(4,\)"):
        load_dataset("mnist_idx", path=str(tmp_path))


def test_missing_files_named_with_directory(tmp_path: Path):
    _write_mnist(tmp_path)
    (tmp_path / IDX_FILES["test_labels"]).unlink()
    with pytest.raises(DataError) as info:
        load_dataset("mnist_idx", path=str(tmp_path))
    message = str(info.value)
    assert "missing IDX file(s) t10k-labels-idx1-ubyte in" in message and str(tmp_path) in message
    for name in IDX_FILES.values():
        assert name in message
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        load_dataset("fashion_mnist_idx", path=str(tmp_path / "nowhere"))


def test_dims_whose_product_overflows_int64_are_a_data_error(tmp_path: Path):
    # 65536**4 = 2**64 wraps to 0 in int64 and would "match" an empty body; the check uses Python ints
    path = tmp_path / "huge-idx4-ubyte"
    path.write_bytes(bytes([0, 0, 0x08, 4]) + np.full(4, 65536, dtype=">u4").tobytes())
    with pytest.raises(DataError) as info:
        read_idx(path)
    text = str(info.value)
    assert "huge-idx4-ubyte" in text and "(65536, 65536, 65536, 65536)" in text and str(2**64) in text
    # a product past int64 that does not wrap to the body size names the real number of bytes too
    (tmp_path / "wide").write_bytes(bytes([0, 0, 0x0D, 2]) + np.full(2, 2**32 - 1, dtype=">u4").tobytes() + b"\0" * 8)
    with pytest.raises(DataError, match=str((2**32 - 1) ** 2 * 4)):
        read_idx(tmp_path / "wide")
