"""Lossy quantization stages applied to float tensors before compression.

* ``fp16``: cast to IEEE half precision (relative error <= 2**-11 inside the half range;
  magnitudes above 65504 become +-inf, exactly as ``numpy.astype(float16)``).
* ``int8``: per-tensor affine, ``x ~= scale * (q - zero_point)`` with ``q`` in [-128, 127] and
  an integer ``zero_point``; the absolute error is at most ``scale / 2`` (plus the rounding of
  the result to the tensor's own dtype) and zero, hence ReLU sparsity, is represented exactly
  whenever it lies in the tensor's range. Tensors holding inf/NaN cannot be int8-quantized.

Integer and bool tensors are never quantized. All arithmetic on parameters is float64.
"""

from __future__ import annotations

import math

import numpy as np

from meshlearn.errors import ProtocolError, UsageError

__all__ = ["quantize_int8", "dequantize_int8", "check_int8_params", "MAX_ZERO_POINT"]

MAX_ZERO_POINT = 2**53  # exact in float64; a peer claiming more is lying


def quantize_int8(arr: np.ndarray) -> tuple[np.ndarray, float, int]:
    """Return ``(q, scale, zero_point)`` for a float array; raises UsageError on inf/NaN."""
    if arr.size == 0:
        return np.zeros(arr.shape, dtype=np.int8), 1.0, 0
    x = arr.astype(np.float64, copy=False)
    lo, hi = float(x.min()), float(x.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise UsageError(
            "int8 quantization needs finite values but the tensor holds inf/NaN; "
            "use quantize='fp16' or 'none' for it"
        )
    scale, zero_point = _affine_params(lo, hi)
    q = np.rint(x / scale + zero_point)
    return np.clip(q, -128, 127).astype(np.int8), scale, zero_point


def _affine_params(lo: float, hi: float) -> tuple[float, int]:
    scale = hi / 255.0 - lo / 255.0  # no overflow for float64 extremes
    if not scale > 0:  # constant (or subnormal-range) tensor: x / scale is 0 or +-1, exact
        scale = max(abs(lo), abs(hi)) or 1.0
    zero_point = -128 - round(lo / scale)
    return scale, int(zero_point)


def dequantize_int8(q: np.ndarray, scale: float, zero_point: int, dtype: np.dtype) -> np.ndarray:
    """Inverse of :func:`quantize_int8`, returning an array of ``dtype``."""
    x = (q.astype(np.float64) - float(zero_point)) * scale
    return x.astype(dtype)


def check_int8_params(scale: object, zero_point: object) -> tuple[float, int]:
    """Validate quantization parameters received from a peer."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise ProtocolError(f"int8 scale must be a number, got {scale!r}")
    if not (math.isfinite(scale) and scale > 0):
        raise ProtocolError(f"int8 scale must be finite and positive, got {scale!r}")
    if isinstance(zero_point, bool) or not isinstance(zero_point, int):
        raise ProtocolError(f"int8 zero_point must be an integer, got {zero_point!r}")
    if abs(zero_point) > MAX_ZERO_POINT:
        raise ProtocolError(f"int8 zero_point {zero_point} is out of range")
    return float(scale), zero_point
