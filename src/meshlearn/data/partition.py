"""Partitioners: how a labelled training set is spread over federated clients.

A partitioner is ``(labels, num_clients, rng, **params) -> list[np.ndarray]``: one sorted
int64 index array per client, pairwise disjoint, covering every sample (``shards`` may
drop samples; see its docstring). All randomness comes from the ``rng`` argument, so the
same seed gives the same partition. ``summary_stats``/``partition_summary`` describe how
skewed a partition is.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from rich.table import Table

from meshlearn.errors import UsageError
from meshlearn.registry import Registry, check_params

__all__ = ["PARTITIONERS", "partition", "summary_stats", "partition_summary"]

Partitioner = Callable[..., list[np.ndarray]]
PARTITIONERS: Registry[Partitioner] = Registry("partitioners")


def partition(
    name: str,
    labels: np.ndarray,
    num_clients: int,
    rng: np.random.Generator | int,
    **params: Any,
) -> list[np.ndarray]:
    """Split sample indices of ``labels`` over ``num_clients`` with the partitioner ``name``."""
    fn = PARTITIONERS.get(name)
    check_params(fn, f"partitioner {name!r}", params, fixed=3)
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise UsageError(f"labels must be a 1-D integer array, got {labels.dtype} {labels.shape}")
    if not 1 <= num_clients <= len(labels):
        raise UsageError(f"num_clients must be in 1..{len(labels)} (one sample each at least), got {num_clients}")
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    return [np.sort(p).astype(np.int64) for p in fn(labels, num_clients, gen, **params)]


def _split_by_counts(indices: np.ndarray, counts: np.ndarray) -> list[np.ndarray]:
    return np.split(indices, np.cumsum(counts)[:-1])


@PARTITIONERS.register("iid")
def iid(labels: np.ndarray, num_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle, then cut into ``num_clients`` near-equal parts (sizes differ by at most 1)."""
    return np.array_split(rng.permutation(len(labels)), num_clients)


def _dirichlet_draw(
    labels: np.ndarray, num_clients: int, alpha: float, rng: np.random.Generator
) -> list[list[np.ndarray]]:
    buckets: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        shares = rng.dirichlet(np.full(num_clients, alpha))
        for client, part in enumerate(_split_by_counts(members, rng.multinomial(len(members), shares))):
            buckets[client].append(part)
    return buckets


def _top_up(parts: list[np.ndarray], min_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Move random samples from the currently largest client to each client below ``min_size``."""
    parts = [rng.permutation(p) for p in parts]
    for small in range(len(parts)):
        while len(parts[small]) < min_size:
            big = int(np.argmax([len(p) for p in parts]))
            need = min(min_size - len(parts[small]), len(parts[big]) - min_size)
            parts[small] = np.concatenate([parts[small], parts[big][:need]])
            parts[big] = parts[big][need:]
    return parts


@PARTITIONERS.register("dirichlet")
def dirichlet(
    labels: np.ndarray,
    num_clients: int,
    rng: np.random.Generator,
    alpha: float = 0.5,
    min_size: int = 1,
    max_attempts: int = 20,
) -> list[np.ndarray]:
    """Label skew: each class is spread over clients by proportions ~ Dirichlet(alpha).

    Small alpha ⇒ each client sees few classes; large alpha ⇒ close to iid. Every client gets
    at least ``min_size`` samples: up to ``max_attempts`` fresh draws are tried; if all fall
    short (likely for many clients and small alpha), the last draw is repaired by moving
    random samples from the largest clients to the short ones.
    """
    if alpha <= 0 or min_size < 0 or max_attempts < 1:
        raise UsageError(f"dirichlet needs alpha > 0, min_size >= 0, max_attempts >= 1 "
                         f"(got {alpha}, {min_size}, {max_attempts})")
    if min_size * num_clients > len(labels):
        raise UsageError(f"dirichlet: {num_clients} clients x min_size {min_size} exceeds {len(labels)} samples")
    for _ in range(max_attempts):
        parts = [np.concatenate(b) for b in _dirichlet_draw(labels, num_clients, alpha, rng)]
        if min(len(p) for p in parts) >= min_size:
            return parts
    return _top_up(parts, min_size, rng)


def _assign_classes(classes: np.ndarray, num_clients: int, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    """k distinct classes per client, preferring the least-held classes (ties at random)."""
    held = np.zeros(len(classes), dtype=np.int64)
    chosen = []
    for _ in range(num_clients):
        order = np.lexsort((rng.random(len(classes)), held))[:k]
        held[order] += 1
        chosen.append(order)
    return chosen


@PARTITIONERS.register("shards")
def shards(
    labels: np.ndarray,
    num_clients: int,
    rng: np.random.Generator,
    classes_per_client: int = 2,
) -> list[np.ndarray]:
    """Pathological label skew: each client holds exactly ``classes_per_client`` classes.

    Classes are handed out so that holder counts stay balanced; each class's samples are
    split evenly among its holders. If ``num_clients * classes_per_client`` is smaller than
    the number of classes, the classes nobody holds are dropped (the only partitioner that
    does not cover every sample).
    """
    classes = np.unique(labels)
    k = classes_per_client
    if not 1 <= k <= len(classes):
        raise UsageError(f"shards: classes_per_client must be in 1..{len(classes)}, got {k}")
    chosen = _assign_classes(classes, num_clients, k, rng)
    holders: dict[int, list[int]] = {c: [] for c in range(len(classes))}
    for client, cls in enumerate(chosen):
        for c in cls:
            holders[int(c)].append(client)
    buckets: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for c, owners in holders.items():
        _deal_class(np.flatnonzero(labels == classes[c]), owners, buckets, rng, int(classes[c]))
    return [np.concatenate(b) for b in buckets]


def _deal_class(
    members: np.ndarray, owners: list[int], buckets: list[list[np.ndarray]], rng: np.random.Generator, label: int
) -> None:
    if not owners:
        return
    if len(members) < len(owners):
        raise UsageError(f"shards: class {label} has {len(members)} samples but {len(owners)} clients must hold it; "
                         "lower num_clients or classes_per_client")
    for owner, part in zip(owners, np.array_split(rng.permutation(members), len(owners))):
        buckets[owner].append(part)


@PARTITIONERS.register("quantity_skew")
def quantity_skew(
    labels: np.ndarray,
    num_clients: int,
    rng: np.random.Generator,
    alpha: float = 1.0,
    min_size: int = 1,
) -> list[np.ndarray]:
    """Size skew with iid labels: client sizes ~ min_size + Multinomial(rest, Dirichlet(alpha))."""
    if alpha <= 0 or min_size < 0:
        raise UsageError(f"quantity_skew needs alpha > 0 and min_size >= 0 (got {alpha}, {min_size})")
    rest = len(labels) - min_size * num_clients
    if rest < 0:
        raise UsageError(f"quantity_skew: {num_clients} clients x min_size {min_size} exceeds {len(labels)} samples")
    shares = rng.dirichlet(np.full(num_clients, alpha))
    counts = min_size + rng.multinomial(rest, shares)
    return _split_by_counts(rng.permutation(len(labels)), counts)


# ---------------------------------------------------------------- summaries


def _histograms(labels: np.ndarray, parts: list[np.ndarray], num_classes: int) -> np.ndarray:
    """(num_clients, num_classes) label counts."""
    if not parts:
        return np.zeros((0, num_classes), dtype=np.int64)
    return np.stack([np.bincount(labels[p], minlength=num_classes) for p in parts])


def _entropy_bits(hist: np.ndarray) -> np.ndarray:
    totals = hist.sum(axis=1, keepdims=True)
    p = np.divide(hist, totals, out=np.zeros(hist.shape), where=totals > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.nansum(np.where(p > 0, p * np.log2(p), 0.0), axis=1)


_STAT_KEYS = ("num_clients", "total", "min_size", "median_size", "max_size", "mean_classes", "mean_label_entropy")


def summary_stats(labels: np.ndarray, parts: list[np.ndarray], num_classes: int) -> dict[str, float]:
    """Size and skew statistics; ``mean_label_entropy`` is in bits (iid ≈ log2(num_classes))."""
    hist = _histograms(np.asarray(labels), parts, num_classes)
    sizes = hist.sum(axis=1)
    if not len(sizes):
        return dict.fromkeys(_STAT_KEYS, 0.0)
    return {
        "num_clients": float(len(parts)),
        "total": float(sizes.sum()),
        "min_size": float(sizes.min()),
        "median_size": float(np.median(sizes)),
        "max_size": float(sizes.max()),
        "mean_classes": float((hist > 0).sum(axis=1).mean()),
        "mean_label_entropy": float(_entropy_bits(hist).mean()),
    }


def _compact(row: np.ndarray, limit: int = 8) -> str:
    """``"0:12 3:40 7:5"`` for the non-zero classes, largest first, at most ``limit`` shown."""
    nonzero = np.flatnonzero(row)
    top = nonzero[np.argsort(-row[nonzero], kind="stable")][:limit]
    text = " ".join(f"{c}:{row[c]}" for c in sorted(top))
    return text + (f" …+{len(nonzero) - limit}" if len(nonzero) > limit else "")


def partition_summary(
    labels: np.ndarray, parts: list[np.ndarray], num_classes: int, max_rows: int = 50
) -> Table:
    """A rich table: per client its size, number of classes and compact label histogram."""
    hist = _histograms(np.asarray(labels), parts, num_classes)
    stats = summary_stats(labels, parts, num_classes)
    table = Table(title=f"{len(parts)} clients, sizes {stats['min_size']:.0f}/{stats['median_size']:.0f}/"
                        f"{stats['max_size']:.0f} (min/median/max), entropy {stats['mean_label_entropy']:.2f} bits")
    for column, justify in (("client", "right"), ("size", "right"), ("classes", "right"), ("labels", "left")):
        table.add_column(column, justify=justify)
    for i, row in enumerate(hist[:max_rows]):
        table.add_row(str(i), str(int(row.sum())), str(int((row > 0).sum())), _compact(row))
    if len(hist) > max_rows:
        table.add_row("…", "", "", f"{len(hist) - max_rows} more clients")
    return table
