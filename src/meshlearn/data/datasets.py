"""Datasets: the ``Dataset`` container, the ``DATASETS`` registry and its built-in loaders.

Every loader returns ``(train, test)``. Features are float32, shaped ``(N, C, H, W)`` for
images and ``(N, D)`` for tabular data; labels are int64 in ``0..num_classes-1``.
Nothing here downloads: ``digits`` ships inside scikit-learn, every other loader reads
files the user already has. Splits are stratified and seeded (same seed ⇒ same split).
"""

from __future__ import annotations

import csv as csvlib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from meshlearn.data.idx import find_idx_files, read_idx
from meshlearn.errors import DataError, UsageError
from meshlearn.registry import Registry, check_params

__all__ = ["Dataset", "DATASETS", "load_dataset", "stratified_split"]

DATASETS: Registry[Callable[..., tuple["Dataset", "Dataset"]]] = Registry("datasets")


@dataclass(eq=False)
class Dataset:
    """Features ``x`` (float32), labels ``y`` (int64) and the number of classes."""

    x: np.ndarray
    y: np.ndarray
    num_classes: int
    name: str

    def __post_init__(self) -> None:
        self.x = np.ascontiguousarray(self.x, dtype=np.float32)
        self.y = np.ascontiguousarray(self.y, dtype=np.int64)
        if self.x.ndim < 2 or self.y.ndim != 1 or len(self.x) != len(self.y):
            raise UsageError(
                f"Dataset {self.name!r}: need x (N, ...) and y (N,), got {self.x.shape} and {self.y.shape}"
            )
        if len(self.y) and (self.y.min() < 0 or self.y.max() >= self.num_classes):
            raise UsageError(f"Dataset {self.name!r}: labels must lie in 0..{self.num_classes - 1}")

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, e.g. ``(1, 8, 8)`` or ``(D,)``."""
        return tuple(self.x.shape[1:])

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, indices: np.ndarray) -> Dataset:
        """A new Dataset holding the rows ``indices`` (copied)."""
        idx = np.asarray(indices, dtype=np.int64)
        return Dataset(self.x[idx], self.y[idx], self.num_classes, self.name)


def load_dataset(name: str, **params: Any) -> tuple[Dataset, Dataset]:
    """Load the registered dataset ``name`` with its keyword ``params``."""
    loader = DATASETS.get(name)
    check_params(loader, f"dataset {name!r}", params)
    return loader(**params)


# ---------------------------------------------------------------- shared helpers


def stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, test) index arrays, stratified by label and seeded.

    The test set has ``round(N * test_fraction)`` samples; per class the share is
    ``n_c * test_fraction`` rounded by largest remainder, so classes stay proportional.
    """
    if not 0.0 < test_fraction < 1.0:
        raise UsageError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    labels, sizes = np.unique(y, return_counts=True)
    ideal = sizes * test_fraction
    quota = np.floor(ideal).astype(np.int64)
    extra = int(round(len(y) * test_fraction)) - int(quota.sum())
    quota[np.argsort(quota - ideal, kind="stable")[:extra]] += 1
    test: list[np.ndarray] = []
    for label, k in zip(labels, quota):
        test.append(rng.permutation(np.flatnonzero(y == label))[:k])
    test_idx = np.sort(np.concatenate(test)) if test else np.zeros(0, np.int64)
    train_idx = np.setdiff1d(np.arange(len(y)), test_idx)
    return train_idx, test_idx


def _standardize(train_x: np.ndarray, test_x: np.ndarray, per_feature: bool) -> tuple[np.ndarray, np.ndarray]:
    """Shift/scale both sets by the train mean/std (per feature or global); std < 1e-8 → 1."""
    axis = 0 if per_feature else None
    mean = train_x.mean(axis=axis, dtype=np.float64)
    std = train_x.std(axis=axis, dtype=np.float64)
    std = np.where(std < 1e-8, 1.0, std)
    return ((train_x - mean) / std).astype(np.float32), ((test_x - mean) / std).astype(np.float32)


def _as_labels(y: np.ndarray, where: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or y.dtype.kind not in "iuf" or not np.all(np.isfinite(y)):
        raise DataError(f"{where}: labels must be a 1-D numeric array, got {y.dtype} {y.shape}")
    if len(y) and (np.any(y != np.round(y)) or y.min() < 0):
        raise DataError(f"{where}: labels must be non-negative integers (class ids 0..K-1)")
    return y.astype(np.int64)


def _as_features(x: np.ndarray, where: str) -> np.ndarray:
    """float32 (N, D) or (N, C, H, W); (N, H, W) gains a channel axis; uint8 is scaled by 1/255."""
    x = np.asarray(x)
    if x.dtype.kind not in "iuf" or x.ndim not in (2, 3, 4):
        raise DataError(f"{where}: features must be numeric (N, D), (N, H, W) or (N, C, H, W), got {x.dtype} {x.shape}")
    scale = 1.0 / 255.0 if x.dtype == np.uint8 else 1.0
    x = x.astype(np.float32) * np.float32(scale)
    if not np.all(np.isfinite(x)):
        raise DataError(f"{where}: features contain NaN or infinity")
    return x[:, None] if x.ndim == 3 else x


def _pair(
    name: str, x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, y_te: np.ndarray, num_classes: int | None
) -> tuple[Dataset, Dataset]:
    k = int(max(y_tr.max(initial=-1), y_te.max(initial=-1)) + 1)
    if num_classes is not None and num_classes < k:
        raise DataError(f"{name}: labels go up to {k - 1} but num_classes={num_classes}")
    k = num_classes if num_classes is not None else k
    return Dataset(x_tr, y_tr, k, name), Dataset(x_te, y_te, k, name)


# ---------------------------------------------------------------- built-in loaders


@DATASETS.register("digits")
def digits(test_fraction: float = 0.2, seed: int = 0) -> tuple[Dataset, Dataset]:
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes), shape (N, 1, 8, 8).

    Pixels are scaled to [0, 1] (÷16) and then standardized with ONE global train mean/std,
    not per pixel: several border pixels are constant in train, and per-pixel scaling would
    blow up their rare non-zero test values. The same transform suits MLPs and CNNs.
    """
    from sklearn.datasets import load_digits  # deferred: importing sklearn costs ~1 s

    bunch = load_digits()
    x = (bunch.data.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    y = bunch.target.astype(np.int64)
    tr, te = stratified_split(y, test_fraction, seed)
    x_tr, x_te = _standardize(x[tr], x[te], per_feature=False)
    return Dataset(x_tr, y[tr], 10, "digits"), Dataset(x_te, y[te], 10, "digits")


def _idx_dataset(path: str | Path, name: str) -> tuple[Dataset, Dataset]:
    files = find_idx_files(path, name)
    arrays = {role: read_idx(p) for role, p in files.items()}
    sets = []
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        where = f"{name} ({files[split + '_images'].name}, {files[split + '_labels'].name})"
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(f"{where}: need images (N, H, W) and labels (N,), got {images.shape} and {labels.shape}")
        sets.append((_as_features(images, where), _as_labels(labels, where)))
    return _pair(name, *sets[0], *sets[1], num_classes=10)


@DATASETS.register("mnist_idx")
def mnist_idx(path: str) -> tuple[Dataset, Dataset]:
    """MNIST from the four standard IDX files in directory ``path``; (N, 1, 28, 28) in [0, 1]."""
    return _idx_dataset(path, "mnist")


@DATASETS.register("fashion_mnist_idx")
def fashion_mnist_idx(path: str) -> tuple[Dataset, Dataset]:
    """Fashion-MNIST from the four standard IDX files in directory ``path``; like ``mnist_idx``."""
    return _idx_dataset(path, "fashion_mnist")


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DataError(f"npz: file {path} not found; pass path=<file saved with numpy.savez>")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"npz: cannot read {path} ({exc}); save it with numpy.savez(path, x=..., y=...)") from exc


@DATASETS.register("npz")
def npz(
    path: str,
    test_fraction: float = 0.2,
    seed: int = 0,
    standardize: bool = False,
    num_classes: int | None = None,
) -> tuple[Dataset, Dataset]:
    """A ``.npz`` with ``x_train, y_train, x_test, y_test``, or ``x, y`` split by ``test_fraction``.

    Features: (N, D), (N, H, W) (a channel axis is added) or (N, C, H, W) — channels first.
    uint8 features are scaled to [0, 1]; ``standardize`` applies per-feature train mean/std.
    """
    path = Path(path).expanduser()
    data = _read_npz(path)
    if {"x_train", "y_train", "x_test", "y_test"} <= data.keys():
        parts = [data[k] for k in ("x_train", "y_train", "x_test", "y_test")]
    elif {"x", "y"} <= data.keys():
        parts = _split_xy(data["x"], data["y"], test_fraction, seed, str(path))
    else:
        raise DataError(
            f"npz: {path} has keys {sorted(data) or 'none'}; expected x_train, y_train, x_test, y_test "
            "(or x, y to be split by test_fraction)"
        )
    return _finish_pair(path.stem, parts, str(path), standardize, num_classes)


def _split_xy(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int, where: str) -> list[np.ndarray]:
    y = _as_labels(y, where)
    if len(x) != len(y):
        raise DataError(f"{where}: x has {len(x)} rows but y has {len(y)}")
    tr, te = stratified_split(y, test_fraction, seed)
    return [x[tr], y[tr], x[te], y[te]]


def _finish_pair(
    name: str, parts: list[np.ndarray], where: str, standardize: bool, num_classes: int | None
) -> tuple[Dataset, Dataset]:
    x_tr, x_te = _as_features(parts[0], f"{where} (train)"), _as_features(parts[2], f"{where} (test)")
    y_tr, y_te = _as_labels(parts[1], f"{where} (train)"), _as_labels(parts[3], f"{where} (test)")
    if len(x_tr) != len(y_tr) or len(x_te) != len(y_te) or x_tr.shape[1:] != x_te.shape[1:]:
        raise DataError(f"{where}: mismatched shapes x_train {x_tr.shape}, y_train {y_tr.shape}, "
                        f"x_test {x_te.shape}, y_test {y_te.shape}")
    if standardize:
        x_tr, x_te = _standardize(x_tr, x_te, per_feature=True)
    return _pair(name, x_tr, y_tr, x_te, y_te, num_classes)


def _read_csv_rows(path: Path, label_column: str) -> tuple[list[str], np.ndarray]:
    """Header and a float64 matrix of all rows; non-numeric cells name their row and column."""
    if not path.is_file():
        raise DataError(f"csv: file {path} not found")
    with path.open(newline="") as fh:
        reader = csvlib.reader(fh)
        header = [h.strip() for h in next(reader, [])]
        if label_column not in header:
            raise DataError(f"csv: {path} has no column {label_column!r} (columns: {', '.join(header) or 'none'}); "
                            "pass label_column=<name>")
        rows = [_parse_row(row, header, path, line) for line, row in enumerate(reader, start=2) if row]
    if not rows:
        raise DataError(f"csv: {path} has a header but no data rows")
    return header, np.asarray(rows, dtype=np.float64)


def _parse_row(row: list[str], header: list[str], path: Path, line: int) -> list[float]:
    if len(row) != len(header):
        raise DataError(f"csv: {path} row {line} has {len(row)} cells, header has {len(header)}")
    values = []
    for column, cell in zip(header, row):
        try:
            values.append(float(cell))
        except ValueError:
            raise DataError(f"csv: {path} row {line}, column {column!r}: {cell!r} is not a number") from None
    return values


@DATASETS.register("csv")
def csv(
    path: str,
    label_column: str = "label",
    test_fraction: float = 0.2,
    seed: int = 0,
    standardize: bool = True,
) -> tuple[Dataset, Dataset]:
    """A numeric CSV with a header row; ``label_column`` holds class ids 0..K-1, the rest are features.

    Features are standardized per column with the train mean/std unless ``standardize=False``.
    Row numbers in errors are file line numbers (the header is row 1).
    """
    path = Path(path).expanduser()
    header, table = _read_csv_rows(path, label_column)
    col = header.index(label_column)
    x, y = np.delete(table, col, axis=1), table[:, col]
    if x.shape[1] == 0:
        raise DataError(f"csv: {path} has only the label column; add feature columns")
    parts = _split_xy(x, y, test_fraction, seed, f"{path} column {label_column!r}")
    return _finish_pair(path.stem, parts, str(path), standardize, None)
