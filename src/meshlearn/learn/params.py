"""Model parameters as plain data: ``dict[str, np.ndarray]`` in state_dict order.

This is the form parameters take in tasks, messages and aggregation. ``set_params`` is the
gate where a peer's update meets a model, so a wrong key or shape raises ``ProtocolError``
(a peer misbehaved), never a torch error. Importing this module does not import torch: nodes
average and compare parameters without the learning stack.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from meshlearn.errors import ProtocolError, UsageError

__all__ = ["Params", "weighted_average", "l2_distance", "mismatches"]

Params = dict[str, np.ndarray]


def mismatches(expected: Mapping[str, tuple[int, ...]], params: Mapping[str, np.ndarray]) -> list[str]:
    problems = [f"missing {k}" for k in expected if k not in params]
    problems += [f"unexpected {k}" for k in params if k not in expected]
    for key, shape in expected.items():
        if key not in params:
            continue
        value = np.asarray(params[key])
        if value.shape != shape:
            problems.append(f"{key} has shape {value.shape}, expected {shape}")
        elif value.dtype.kind not in "fiub":
            problems.append(f"{key} has non-numeric dtype {value.dtype}")
    return problems


def weighted_average(params_list: Sequence[Mapping[str, np.ndarray]], weights: Sequence[float]) -> Params:
    """sum_i w_i * p_i / sum_i w_i per key, accumulated in float64, returned as float32."""
    if not params_list or len(params_list) != len(weights):
        raise UsageError(f"weighted_average needs one weight per parameter set, got {len(params_list)} sets "
                         f"and {len(weights)} weights")
    w = np.asarray(weights, dtype=np.float64)
    if np.any(w < 0) or not np.all(np.isfinite(w)) or w.sum() <= 0:
        raise UsageError(f"weights must be finite, non-negative and not all zero, got {list(weights)}")
    reference = {k: tuple(np.shape(v)) for k, v in params_list[0].items()}
    for i, p in enumerate(params_list[1:], start=1):
        problems = mismatches(reference, p)
        if problems:
            raise ProtocolError(f"parameter set {i} differs from set 0: {'; '.join(problems)}")
    out: Params = {}
    for key in reference:
        acc = np.zeros(reference[key], dtype=np.float64)
        for wi, p in zip(w, params_list):
            acc += wi * np.asarray(p[key], dtype=np.float64)
        out[key] = (acc / w.sum()).astype(np.float32)
    return out


def l2_distance(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> float:
    """Euclidean distance between two parameter sets with the same keys."""
    return float(np.sqrt(sum(np.sum((np.asarray(a[k], np.float64) - np.asarray(b[k], np.float64)) ** 2) for k in a)))
