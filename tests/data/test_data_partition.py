"""Partitioners: disjoint cover, determinism, skew ordering, shards and min_size guarantees."""

from __future__ import annotations

import numpy as np
import pytest
from rich.console import Console
from rich.table import Table

from meshlearn.data import PARTITIONERS, partition, partition_summary, summary_stats
from meshlearn.errors import RegistryError, UsageError

LABELS = np.repeat(np.arange(10), 60)  # 600 samples, 10 balanced classes
CASES = [
    ("iid", {}),
    ("dirichlet", {"alpha": 0.3}),
    ("shards", {"classes_per_client": 2}),
    ("quantity_skew", {"alpha": 0.5}),
]


def _stats(name: str, seed: int = 0, num_clients: int = 20, **params) -> dict[str, float]:
    return summary_stats(LABELS, partition(name, LABELS, num_clients, seed, **params), 10)


@pytest.mark.parametrize(("name", "params"), CASES)
def test_disjoint_and_covering(name, params):
    parts = partition(name, LABELS, 20, np.random.default_rng(0), **params)
    assert len(parts) == 20 and all(p.dtype == np.int64 for p in parts)
    joined = np.concatenate(parts)
    assert np.array_equal(np.sort(joined), np.arange(len(LABELS)))


@pytest.mark.parametrize(("name", "params"), CASES)
def test_deterministic_for_same_seed(name, params):
    a = partition(name, LABELS, 20, np.random.default_rng(7), **params)
    b = partition(name, LABELS, 20, 7, **params)
    c = partition(name, LABELS, 20, 8, **params)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_iid_sizes_balanced():
    stats = _stats("iid")
    assert stats["min_size"] == stats["max_size"] == 30 and stats["mean_classes"] > 8


def test_dirichlet_small_alpha_is_more_skewed():
    skewed = np.mean([_stats("dirichlet", seed=s, alpha=0.1)["mean_label_entropy"] for s in range(3)])
    flat = np.mean([_stats("dirichlet", seed=s, alpha=100.0)["mean_label_entropy"] for s in range(3)])
    assert skewed < 2.0 < 3.0 < flat <= np.log2(10)


@pytest.mark.parametrize(("num_clients", "alpha", "min_size"), [(50, 0.1, 5), (300, 0.1, 1), (20, 0.05, 25)])
def test_dirichlet_min_size_respected(num_clients, alpha, min_size):
    parts = partition("dirichlet", LABELS, num_clients, 0, alpha=alpha, min_size=min_size)
    assert min(len(p) for p in parts) >= min_size
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(LABELS)))


def test_dirichlet_impossible_min_size():
    with pytest.raises(UsageError, match="min_size"):
        partition("dirichlet", LABELS, 100, 0, min_size=7)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_shards_exactly_k_classes(k):
    parts = partition("shards", LABELS, 15, 0, classes_per_client=k)
    assert all(len(np.unique(LABELS[p])) == k for p in parts)
    holders = np.bincount(np.concatenate([np.unique(LABELS[p]) for p in parts]), minlength=10)
    assert holders.max() - holders.min() <= 1  # balanced class ownership


def test_shards_drops_unheld_classes_and_rejects_bad_k():
    parts = partition("shards", LABELS, 3, 0, classes_per_client=2)  # 6 of 10 classes held
    assert len(np.unique(LABELS[np.concatenate(parts)])) == 6
    with pytest.raises(UsageError, match="classes_per_client"):
        partition("shards", LABELS, 3, 0, classes_per_client=11)
    with pytest.raises(UsageError, match="lower num_clients"):
        partition("shards", LABELS, 600, 0, classes_per_client=2)


def test_quantity_skew_sizes_vary_labels_stay_mixed():
    stats = _stats("quantity_skew", alpha=0.3, min_size=3)
    assert stats["min_size"] >= 3 and stats["max_size"] > 3 * stats["median_size"]
    big = max(partition("quantity_skew", LABELS, 20, 0, alpha=0.3), key=len)
    assert len(np.unique(LABELS[big])) == 10


def test_partition_argument_errors():
    with pytest.raises(RegistryError, match="dirichlet"):
        partition("pathological", LABELS, 4, 0)
    with pytest.raises(UsageError, match="alpha"):
        partition("iid", LABELS, 4, 0, alpha=1.0)
    with pytest.raises(UsageError, match="num_clients"):
        partition("iid", LABELS, 0, 0)
    with pytest.raises(UsageError, match="integer"):
        partition("iid", LABELS.astype(float), 4, 0)
    assert set(PARTITIONERS.names()) >= {"iid", "dirichlet", "shards", "quantity_skew"}


def test_summary_stats_on_hand_input():
    labels = np.array([0, 0, 1, 1, 2, 2])
    stats = summary_stats(labels, [np.array([0, 1]), np.array([2, 4]), np.array([3, 5])], 3)
    assert stats["min_size"] == stats["median_size"] == stats["max_size"] == 2
    assert stats["mean_classes"] == pytest.approx(5 / 3)
    assert stats["mean_label_entropy"] == pytest.approx(2 / 3)  # 0, 1 and 1 bit


def test_partition_summary_renders():
    parts = partition("dirichlet", LABELS, 60, 0, alpha=0.5)
    table = partition_summary(LABELS, parts, 10, max_rows=5)
    assert isinstance(table, Table) and table.row_count == 6
    console = Console(width=120, record=True)
    console.print(table)
    text = console.export_text()
    assert "55 more clients" in text and "60 clients" in text
