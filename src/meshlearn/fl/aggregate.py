"""Aggregation rules: pure functions from client updates to new global parameters.

A rule is ``rule(updates, current, **options) -> params``: ``updates`` is a list of
``(params, num_samples)``, ``current`` the global parameters the clients started from (rules that
look at update deltas ``params − current`` need them; the others ignore them). Options are
keyword-only and named like the ``[fl]`` keys that set them (``trim``, ``clip_norm``). Rules are
registered in ``AGGREGATORS``, check nothing about the network and are tested with hand-built updates.

    mean          sample-weighted mean (FedAvg, McMahan et al. 2017); one huge update moves it anywhere
    median        coordinate-wise median (Yin et al. 2018); unweighted, ignores < half outliers per coordinate
    trimmed_mean  coordinate-wise mean after dropping the ``trim`` share of values at each end (Yin et al. 2018)
    norm_clip     sample-weighted mean of the deltas clipped to norm ``clip_norm`` (default: the round's median
                  delta norm), added to ``current`` (Sun et al. 2019, "Can you really backdoor FL?")

The robust rules bound what a minority of clients can do to the model; median and trimmed_mean also
ignore the sample counts clients report (a liar cannot buy weight). Shape validation of peer
updates lives in ``check_update``, called by the server before an update is accepted.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from meshlearn.errors import ProtocolError, UsageError
from meshlearn.learn.params import weighted_average
from meshlearn.registry import Registry

__all__ = ["AGGREGATORS", "Aggregator", "check_update", "coordinate_median", "norm_clip", "trimmed_mean",
           "update_norm", "weighted_mean"]

Params = dict[str, np.ndarray]
Update = tuple[Params, int]
Aggregator = Callable[..., Params]  # (updates, current, **options) -> params
AGGREGATORS: Registry[Aggregator] = Registry("aggregators")


def check_update(reference: Params, update: Params) -> None:
    """Raise ProtocolError unless `update` has exactly the keys, shapes and a float dtype of `reference`."""
    missing = sorted(set(reference) - set(update))
    extra = sorted(set(update) - set(reference))
    if missing or extra:
        raise ProtocolError(f"update keys differ from the model: missing {missing}, unexpected {extra}")
    for key, ref in reference.items():
        got = update[key]
        if got.shape != ref.shape:
            raise ProtocolError(f"update tensor {key!r} has shape {got.shape}, the model expects {ref.shape}")
        if not np.issubdtype(got.dtype, np.floating):
            raise ProtocolError(f"update tensor {key!r} has dtype {got.dtype}, expected a float dtype")
        if not np.all(np.isfinite(got)):
            raise ProtocolError(f"update tensor {key!r} contains NaN or infinity")


def _needs_updates(updates: list[Update], rule: str) -> None:
    if not updates:
        raise UsageError(f"the {rule} needs at least one update")


def _stacked(updates: list[Update], key: str) -> np.ndarray:
    """(n_clients, *shape) float64 stack of one tensor over the updates."""
    return np.stack([np.asarray(p[key], dtype=np.float64) for p, _ in updates])


@AGGREGATORS.register("mean")
def weighted_mean(updates: list[Update], current: Params | None = None) -> Params:
    """Sample-weighted mean of client parameters (FedAvg), accumulated in float64."""
    _needs_updates(updates, "weighted mean")
    return weighted_average([p for p, _ in updates], [float(n) for _, n in updates])


@AGGREGATORS.register("median")
def coordinate_median(updates: list[Update], current: Params | None = None) -> Params:
    """Coordinate-wise median of client parameters (unweighted)."""
    _needs_updates(updates, "coordinate median")
    return {key: np.median(_stacked(updates, key), axis=0).astype(np.float32) for key in updates[0][0]}


def trim_count(n: int, trim: float) -> int:
    """Values dropped at each end of n: ⌊trim · n⌋, but always keeping at least one."""
    return min(math.floor(trim * n), (n - 1) // 2)


@AGGREGATORS.register("trimmed_mean")
def trimmed_mean(updates: list[Update], current: Params | None = None, *, trim: float = 0.2) -> Params:
    """Coordinate-wise mean after dropping the ⌊trim · n⌋ smallest and largest values (unweighted)."""
    _needs_updates(updates, "trimmed mean")
    if not 0 <= trim < 0.5:
        raise UsageError(f"trim must be in [0, 0.5), got {trim}")
    k, n = trim_count(len(updates), trim), len(updates)
    out = {}
    for key in updates[0][0]:
        ordered = np.sort(_stacked(updates, key), axis=0)
        out[key] = ordered[k:n - k].mean(axis=0).astype(np.float32)
    return out


def update_norm(params: Params, current: Params) -> float:
    """Euclidean norm of the delta ``params − current`` over every tensor (float64)."""
    return math.sqrt(sum(float(np.sum((np.asarray(params[k], np.float64) - current[k]) ** 2)) for k in current))


@AGGREGATORS.register("norm_clip")
def norm_clip(updates: list[Update], current: Params, *, clip_norm: float | None = None) -> Params:
    """``current`` + the sample-weighted mean of each delta scaled down to norm ≤ bound.

    The bound is ``clip_norm``, or when None the median of this round's delta norms, so at least half
    of the clients pass unclipped and no client moves the model further than a typical one."""
    _needs_updates(updates, "norm-clipped mean")
    norms = [update_norm(p, current) for p, _ in updates]
    bound = float(np.median(norms)) if clip_norm is None else clip_norm
    deltas = []
    for (params, _), norm in zip(updates, norms):
        scale = 1.0 if norm <= bound else bound / norm
        deltas.append({k: scale * (np.asarray(params[k], np.float64) - current[k]) for k in current})
    mean_delta = weighted_average(deltas, [float(n) for _, n in updates])
    return {k: (np.asarray(current[k], np.float64) + mean_delta[k]).astype(np.float32) for k in current}
