"""Aggregation rules: pure functions from client updates to new global parameters.

An update is `(params, num_samples)`. Rules are registered in `AGGREGATORS`; every rule checks
nothing about the network and can be tested with hand-built updates. Shape validation of peer
updates lives in `check_update`, called by the server before an update is accepted.
"""

from __future__ import annotations

import numpy as np

from meshlearn.errors import ProtocolError
from meshlearn.learn.params import weighted_average
from meshlearn.registry import Registry

__all__ = ["AGGREGATORS", "check_update", "weighted_mean"]

Params = dict[str, np.ndarray]
AGGREGATORS: Registry = Registry("aggregators")


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


@AGGREGATORS.register("mean")
def weighted_mean(updates: list[tuple[Params, int]]) -> Params:
    """Sample-weighted mean of client parameters (FedAvg, McMahan et al. 2017), accumulated in float64."""
    if not updates:
        raise ValueError("the weighted mean needs at least one update")
    return weighted_average([p for p, _ in updates], [float(n) for _, n in updates])
