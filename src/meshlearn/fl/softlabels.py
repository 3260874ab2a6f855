"""Soft labels: aggregation rules and wire encodings for distillation-based FL (DS-FL, FD). Pure, no I/O.

A soft label is a probability vector over C classes; a batch of them is an (n, C) array whose rows
are ≥ 0 and sum to 1. Rules live in `SOFT_AGGREGATORS` and map a list of client batches (all (n, C),
same rows = same open samples) to the aggregate batch:

    sa(probs_list)                    mean over clients (Simple Aggregation)
    era(probs_list, temperature=0.1)  softmax(mean / T): Entropy Reduction Aggregation (Itahara et al.);
                                      the softmax is applied to *averaged probabilities*, as in the
                                      paper's re-implementations, so with T = 0.1 no class is ever more
                                      than e^10 times likelier than another.

How much ERA sharpens depends on T·C: near the uniform vector u, softmax(p/T) − u ≈ (p − u)/(T·C),
so it sharpens ambiguous aggregates only when T < 1/C. With the default T = 0.1 and 10 classes it is
neutral to first order and sharpens only aggregates that already have a clear peak; and at any T it
lifts classes with ~0 mass to ≥ e^(-1/T) of the top one, so a sparse or confident aggregate can gain
entropy (e.g. (½, ½, 0, …, 0): ln 2 → 0.85 nats at T = 0.1). Tests pin these behaviours.

Encodings of an (n, C) batch on the wire (`encode_soft` → tensors of a message, `decode_soft` back) are
quantisation schemes of `wire/quant.py`, which holds their arithmetic and error bounds:

    fp32      {"probs": float32}      exact; 4·n·C bytes
    fp16      {"probs": float16}      |error| ≤ max(2^-11·p, 2^-25) per entry (rounding); 2·n·C bytes
    simplex8  {"probs_q8": uint8}     q = round(255·p) (the row's top class is kept ≥ 1), decoded as
                                      q / Σq: |error| ≤ (1 + C·p) / (510 − C) per entry (C < 510),
                                      ≤ 0.022 for C = 10, typically ~1e-3; n·C bytes

Decoding (and `check_indices` for the open-set rows they refer to) is the gate where a peer's soft labels
enter: anything malformed raises ProtocolError.
"""

from __future__ import annotations

from typing import Callable, Literal, Sequence

import numpy as np

from meshlearn.errors import ProtocolError, UsageError
from meshlearn.registry import Registry
from meshlearn.wire.quant import Quantized, QuantScheme, get_scheme

__all__ = ["SOFT_AGGREGATORS", "SOFT_ENCODINGS", "sa", "era", "entropy", "soft_scheme", "encode_soft",
           "decode_soft", "check_soft_labels", "check_indices", "soft_bytes"]

Encoding = Literal["fp32", "fp16", "simplex8"]
SOFT_ENCODINGS: tuple[str, ...] = ("fp32", "fp16", "simplex8")
SOFT_AGGREGATORS: Registry[Callable[..., np.ndarray]] = Registry("soft_aggregators")
_ROW_ATOL = {"fp32": 1e-3, "fp16": 5e-3, "simplex8": 1e-3}  # |Σ row − 1| accepted from a peer, per encoding
_TENSOR = {"fp32": "probs", "fp16": "probs", "simplex8": "probs_q8"}  # message tensor per encoding


def _stack(probs_list: Sequence[np.ndarray]) -> np.ndarray:
    if not probs_list:
        raise UsageError("soft-label aggregation needs at least one client batch")
    shapes = {np.shape(p) for p in probs_list}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise UsageError(f"client batches must all be (n, C) with the same shape, got {sorted(shapes)}")
    return np.stack([np.asarray(p, dtype=np.float64) for p in probs_list])


@SOFT_AGGREGATORS.register("sa")
def sa(probs_list: Sequence[np.ndarray]) -> np.ndarray:
    """Simple Aggregation: the per-sample mean of the clients' probability vectors (float32)."""
    return _stack(probs_list).mean(axis=0).astype(np.float32)


@SOFT_AGGREGATORS.register("era")
def era(probs_list: Sequence[np.ndarray], temperature: float = 0.1) -> np.ndarray:
    """Entropy Reduction Aggregation: softmax(mean / temperature), per sample (float32)."""
    if not temperature > 0:
        raise UsageError(f"ERA temperature must be > 0, got {temperature}")
    z = _stack(probs_list).mean(axis=0) / temperature
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return (z / z.sum(axis=1, keepdims=True)).astype(np.float32)


def entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy in nats of each row of an (n, C) probability batch (0·log 0 = 0)."""
    p = np.asarray(probs, dtype=np.float64)
    logs = np.log(np.where(p > 0, p, 1.0))
    return -(p * logs).sum(axis=1)


# ------------------------------------------------------------------------------ wire encodings


def soft_scheme(encoding: str) -> QuantScheme:
    """The quantisation scheme of soft-label `encoding`; UsageError naming the valid ones otherwise."""
    if encoding not in SOFT_ENCODINGS:
        raise UsageError(f"unknown soft-label encoding {encoding!r} (valid: {', '.join(SOFT_ENCODINGS)})")
    return get_scheme(encoding)


def encode_soft(probs: np.ndarray, encoding: Encoding = "fp32") -> dict[str, np.ndarray]:
    """Message tensors carrying the (n, C) batch `probs` in `encoding` (see the module table)."""
    scheme = soft_scheme(encoding)
    p = np.asarray(probs, dtype=np.float32)
    if p.ndim != 2:
        raise UsageError(f"soft labels must be an (n, C) array, got shape {p.shape}")
    return {_TENSOR[encoding]: scheme.encode(p).codes}


def decode_soft(tensors: dict[str, np.ndarray]) -> np.ndarray:
    """The float32 (n, C) batch carried by `tensors`; ProtocolError if they do not hold one."""
    if "probs_q8" in tensors:
        scheme = get_scheme("simplex8")
        return scheme.decode(Quantized(scheme.check_codes(np.asarray(tensors["probs_q8"]))))
    if "probs" in tensors:
        p = np.asarray(tensors["probs"])
        if p.dtype not in (np.float32, np.float16) or p.ndim != 2:
            raise ProtocolError(f"soft labels 'probs' must be a 2-D float32/float16 array, got {p.dtype} {p.shape}")
        return get_scheme("fp16" if p.dtype == np.float16 else "fp32").decode(Quantized(p))
    raise ProtocolError(f"no soft labels in the message (expected tensor 'probs' or 'probs_q8', got {sorted(tensors)})")


def check_soft_labels(probs: np.ndarray, shape: tuple[int, int], encoding: str = "fp32") -> None:
    """Raise ProtocolError unless `probs` is `shape`, finite, ≥ 0 and every row sums to 1 (within the
    tolerance of `encoding`)."""
    if probs.shape != tuple(shape):
        raise ProtocolError(f"soft labels have shape {probs.shape}, expected {tuple(shape)} (open samples × classes)")
    if not np.all(np.isfinite(probs)):
        raise ProtocolError("soft labels contain NaN or infinity")
    if np.any(probs < 0):
        raise ProtocolError("soft labels contain negative probabilities")
    worst = float(np.max(np.abs(probs.sum(axis=1, dtype=np.float64) - 1.0), initial=0.0))
    if worst > _ROW_ATOL.get(encoding, 1e-3):
        raise ProtocolError(f"soft-label rows must sum to 1; one is off by {worst:.3g}")


def check_indices(tensors: dict[str, np.ndarray], name: str, limit: int) -> np.ndarray:
    """`tensors[name]` as int64 open-set row numbers; ProtocolError unless a 1-D integer array in 0..limit-1."""
    idx = tensors.get(name)
    if idx is None or idx.ndim != 1 or idx.dtype.kind not in "iu":
        raise ProtocolError(f"message needs a 1-D integer tensor {name!r} of open-set rows")
    if len(idx) and (idx.min() < 0 or idx.max() >= limit):
        raise ProtocolError(f"{name!r} must index the open set 0..{limit - 1}")
    return idx.astype(np.int64)


def soft_bytes(n: int, num_classes: int, encoding: Encoding) -> int:
    """Payload bytes of an (n, C) batch in `encoding` (before the wire envelope)."""
    return soft_scheme(encoding).bits // 8 * n * num_classes
