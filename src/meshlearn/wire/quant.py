"""Named quantisation schemes: the one place where meshlearn's lossy number encodings are computed.

Rule: every lossy encoding that goes on the wire is a scheme here, registered in ``QUANT_SCHEMES``
and picked by name (``get_scheme(name, **settings)``). Its users only decide which names they
accept and where the codes and parameters travel:

    user                             config value                          schemes
    FL tensors (``TensorCodec``)     ``wire.quantize``                     fp16, int8 ("none": no scheme)
    FL soft labels (DS-FL)           ``dsfl.soft_label_encoding``          fp32, fp16, simplex8
    split channel (``ChannelSpec``)  ``quant`` + ``bits``, NASC ``quants``  fp32, fp16, uniform

A scheme maps a float array ``x`` to ``Quantized(codes, params)``: ``codes`` (``code_dtype``,
``bits`` each on the wire) and the per-tensor ``params`` the decoder needs (named by ``params``).
Bounds on ``|decode(encode(x)) - x|`` per element (``error_bound(x)`` computes them):

    fp32      any float                cast to float32: exact for float32 input, else <= 2^-24·|x|
                                       (>= 2^-150 absolute); inf beyond the float32 range
    fp16      any float                cast to float16: <= max(2^-11·|x|, 2^-25); |x| > 65504 becomes
                                       +-inf (``numpy.astype``); exact for float16 input
    int8      finite, any shape        per-tensor affine ``x ~ scale·(q - zero_point)``, q in -128..127,
                                       integer zero_point: <= scale/2 (plus rounding to the output
                                       dtype); 0 is exact when it lies in the range (ReLU sparsity)
    simplex8  (n, C) probability rows  q = round(255·p) as uint8 (a row's top class kept >= 1),
                                       decoded q / sum(q): <= (1 + C·p) / (510 - C) for C < 510,
                                       <= 0.022 for C = 10, typically ~1e-3
    uniform   (N, n) float32 rows      per-row min-max, ``x ~ lo + q·scale``, q in 0..2^bits - 1 packed
                                       MSB first (bits 1..16): <= scale/2 (plus float32 rounding);
                                       a row's minimum, hence ReLU zeros, is exact

Arithmetic is float64 (uniform's ``lo``/``scale`` are then rounded to the float32 the split packet
header carries). ``check_params`` / ``check_codes`` are the gate for what a peer
sends: anything malformed is a :class:`~meshlearn.errors.ProtocolError`. Bad local input (inf/NaN
where a scheme needs finite values, wrong shapes) is a :class:`~meshlearn.errors.UsageError`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, ClassVar, Mapping

import numpy as np

from meshlearn.errors import ProtocolError, UsageError
from meshlearn.registry import Registry

__all__ = ["QUANT_SCHEMES", "QuantScheme", "Quantized", "get_scheme", "reject_old_name", "MAX_ZERO_POINT"]

QUANT_SCHEMES: Registry[type["QuantScheme"]] = Registry("quant_schemes")
MAX_ZERO_POINT = 2**53  # exact in float64; a peer claiming more is lying
_EPS32 = float(np.finfo(np.float32).eps)


@dataclass(frozen=True, eq=False)
class Quantized:
    """What a scheme puts on the wire: ``codes`` and the ``params`` needed to decode them."""

    codes: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)


class QuantScheme(ABC):
    """One named encoding; subclasses are frozen dataclasses registered under ``name``."""

    name: ClassVar[str]
    bound: ClassVar[str]  # the documented error bound, one line
    code_dtype: ClassVar[np.dtype]
    bits: ClassVar[int]  # bits per code on the wire
    params: ClassVar[tuple[str, ...]] = ()  # names of the per-tensor parameters

    @abstractmethod
    def encode(self, x: np.ndarray) -> Quantized:
        """Quantise ``x``; raises UsageError on input the scheme cannot represent."""

    def decode(self, q: Quantized, dtype: np.dtype | type = np.float32) -> np.ndarray:
        """The values ``q`` stands for, as ``dtype``."""
        return np.asarray(q.codes).astype(dtype)

    @abstractmethod
    def error_bound(self, x: np.ndarray) -> np.ndarray:
        """Per-element bound on ``|decode(encode(x)) - x|`` (see the module table)."""

    def check_params(self, params: Mapping[str, object]) -> dict[str, Any]:
        """Validate parameters received from a peer; returns them normalised."""
        if set(params) != set(self.params):
            raise ProtocolError(f"{self.name} takes the parameters {list(self.params)}, got {sorted(params)}")
        return dict(params)

    def check_codes(self, codes: np.ndarray) -> np.ndarray:
        """Validate codes received from a peer."""
        if codes.dtype != self.code_dtype:
            raise ProtocolError(f"{self.name} codes must be {self.code_dtype}, got {codes.dtype}")
        return codes

    def pack(self, codes: np.ndarray) -> bytes:
        """Codes as little-endian bytes, ``bits`` each."""
        return codes.astype(self.code_dtype.newbyteorder("<")).tobytes()

    def unpack(self, data: bytes, count: int) -> np.ndarray:
        """Inverse of :meth:`pack` for ``count`` codes."""
        return np.frombuffer(data, self.code_dtype.newbyteorder("<"), count)


def _register(cls: type[QuantScheme]) -> type[QuantScheme]:
    QUANT_SCHEMES.register(cls.name, cls)
    return cls


def get_scheme(name: str, **settings: Any) -> QuantScheme:
    """The scheme registered as ``name`` with ``settings`` (e.g. ``bits`` for uniform)."""
    return _cached(name, tuple(sorted((k, type(v), v) for k, v in settings.items())))


@lru_cache(maxsize=64)
def _cached(name: str, settings: tuple[tuple[str, type, Any], ...]) -> QuantScheme:
    """Keyed on the settings' types too, so ``bits=2.0`` or ``True`` never hits ``bits=2`` or ``1``."""
    try:
        return QUANT_SCHEMES.get(name)(**{k: v for k, _, v in settings})
    except TypeError:
        raise UsageError(f"quantisation scheme {name!r} does not take the settings "
                         f"{[k for k, _, _ in settings]}") from None


def reject_old_name(value: object, old: str, new: str) -> object:
    """Body of a pydantic ``before`` validator: the retired spelling ``old`` fails, naming ``new``."""
    if value == old:
        raise ValueError(f"{old!r} was renamed: use {new}")
    return value


# ---------------------------------------------------------------------------------- float casts


@_register
@dataclass(frozen=True)
class Float32(QuantScheme):
    name = "fp32"
    bound = "exact for float32 input; <= 2^-24·|x| (>= 2^-150) otherwise; inf beyond the float32 range"
    code_dtype = np.dtype(np.float32)
    bits = 32

    def encode(self, x: np.ndarray) -> Quantized:
        with np.errstate(over="ignore"):
            return Quantized(np.array(x, dtype=np.float32, order="C"))

    def error_bound(self, x: np.ndarray) -> np.ndarray:
        return _cast_bound(x, np.float32)


@_register
@dataclass(frozen=True)
class Float16(QuantScheme):
    name = "fp16"
    bound = "<= max(2^-11·|x|, 2^-25); |x| > 65504 becomes +-inf"
    code_dtype = np.dtype(np.float16)
    bits = 16

    def encode(self, x: np.ndarray) -> Quantized:
        with np.errstate(over="ignore"):  # out-of-range values become inf, as documented
            return Quantized(np.asarray(x).astype(np.float16))

    def error_bound(self, x: np.ndarray) -> np.ndarray:
        return _cast_bound(x, np.float16)


def _cast_bound(x: np.ndarray, dtype: type) -> np.ndarray:
    info = np.finfo(dtype)
    mag = np.abs(np.asarray(x, np.float64))
    rel = np.maximum(mag * float(info.eps) / 2, float(info.smallest_subnormal) / 2)
    return np.where(mag > float(info.max), np.inf, rel)


# ---------------------------------------------------------------------------------- int8 (FL tensors)


@_register
@dataclass(frozen=True)
class AffineInt8(QuantScheme):
    """Per-tensor affine int8 with an integer zero point (any shape; inf/NaN rejected)."""

    name = "int8"
    bound = "<= scale / 2 (plus rounding to the output dtype); 0 exact inside the range"
    code_dtype = np.dtype(np.int8)
    bits = 8
    params = ("scale", "zero_point")

    def encode(self, x: np.ndarray) -> Quantized:
        if x.size == 0:
            return Quantized(np.zeros(x.shape, dtype=np.int8), {"scale": 1.0, "zero_point": 0})
        x = x.astype(np.float64, copy=False)
        scale, zero_point = self._affine_params(x)
        q = np.rint(x / scale + zero_point)
        return Quantized(np.clip(q, -128, 127).astype(np.int8), {"scale": scale, "zero_point": zero_point})

    @staticmethod
    def _affine_params(x: np.ndarray) -> tuple[float, int]:
        lo, hi = float(x.min()), float(x.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise UsageError("int8 quantization needs finite values but the tensor holds inf/NaN; "
                             "use quantize='fp16' or 'none' for it")
        scale = hi / 255.0 - lo / 255.0  # no overflow for float64 extremes
        if not scale > 0:  # constant (or subnormal-range) tensor: x / scale is 0 or +-1, exact
            scale = max(abs(lo), abs(hi)) or 1.0
        return scale, int(-128 - round(lo / scale))

    def decode(self, q: Quantized, dtype: np.dtype | type = np.float32) -> np.ndarray:
        x = (q.codes.astype(np.float64) - float(q.params["zero_point"])) * q.params["scale"]
        return x.astype(dtype)

    def error_bound(self, x: np.ndarray) -> np.ndarray:
        scale = self.encode(x).params["scale"]
        return 0.5 * scale + float(np.finfo(x.dtype).eps) * (np.abs(x.astype(np.float64)) + scale)

    def check_params(self, params: Mapping[str, object]) -> dict[str, Any]:
        checked = super().check_params(params)
        scale, zero_point = checked["scale"], checked["zero_point"]
        if isinstance(scale, bool) or not isinstance(scale, (int, float)):
            raise ProtocolError(f"int8 scale must be a number, got {scale!r}")
        if not (math.isfinite(scale) and scale > 0):
            raise ProtocolError(f"int8 scale must be finite and positive, got {scale!r}")
        if isinstance(zero_point, bool) or not isinstance(zero_point, int):
            raise ProtocolError(f"int8 zero_point must be an integer, got {zero_point!r}")
        if abs(zero_point) > MAX_ZERO_POINT:
            raise ProtocolError(f"int8 zero_point {zero_point} is out of range")
        return {"scale": float(scale), "zero_point": zero_point}


# ---------------------------------------------------------------------------------- simplex8 (soft labels)


@_register
@dataclass(frozen=True)
class Simplex8(QuantScheme):
    """Rows of probabilities as uint8 ``round(255·p)``, renormalised on decode."""

    name = "simplex8"
    bound = "<= (1 + C·p) / (510 - C) per entry for C < 510 classes (0.022 for C = 10)"
    code_dtype = np.dtype(np.uint8)
    bits = 8

    def encode(self, x: np.ndarray) -> Quantized:
        p = _rows(x, self.name)
        q = np.rint(np.clip(p, 0.0, 1.0) * 255.0).astype(np.uint8)
        if len(q):  # keep every row decodable: its top class is never rounded to 0
            top, rows = p.argmax(axis=1), np.arange(len(q))
            q[rows, top] = np.maximum(q[rows, top], 1)
        return Quantized(q)

    def decode(self, q: Quantized, dtype: np.dtype | type = np.float32) -> np.ndarray:
        sums = q.codes.sum(axis=1, dtype=np.int64)
        return (q.codes.astype(np.float64) / sums[:, None]).astype(dtype)

    def error_bound(self, x: np.ndarray) -> np.ndarray:
        p = _rows(x, self.name).astype(np.float64)
        c = p.shape[1]
        worst = (1 + c * p) / (510 - c) if c < 510 else np.ones_like(p)
        return worst + _EPS32  # + the float32 rounding of the decoded value

    def check_codes(self, codes: np.ndarray) -> np.ndarray:
        if codes.dtype != np.uint8 or codes.ndim != 2:
            raise ProtocolError(f"simplex8 codes must be a 2-D uint8 array, got {codes.dtype} {codes.shape}")
        if np.any(codes.sum(axis=1, dtype=np.int64) == 0):
            raise ProtocolError("simplex8 soft labels contain an all-zero row; every row needs a non-zero class")
        return codes


def _rows(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise UsageError(f"{name} quantises rows: it needs a 2-D array, got shape {x.shape}")
    return x


# ---------------------------------------------------------------------------------- uniform (split channel)


@_register
@dataclass(frozen=True)
class Uniform(QuantScheme):
    """Per-row min-max with ``bits`` (1..16) per code; params are per-row float32 ``lo`` and ``scale``."""

    name = "uniform"
    bound = "<= scale / 2 (plus float32 rounding), scale = (max - min) / (2^bits - 1) per row"
    code_dtype = np.dtype(np.uint16)
    params = ("lo", "scale")
    bits: int = 8

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not 1 <= self.bits <= 16:
            raise UsageError(f"uniform quantisation takes bits in 1..16, got {self.bits!r}")

    @property
    def levels(self) -> int:
        """The largest code, ``2**bits - 1``."""
        return (1 << self.bits) - 1

    def encode(self, x: np.ndarray) -> Quantized:
        x = _rows(x, self.name)
        if x.size and not np.isfinite(x).all():
            raise UsageError("uniform quantization needs finite values; use quant='fp16' or 'fp32'")
        zeros = np.zeros(x.shape[0], np.float32)
        lo = x.min(axis=1).astype(np.float32) if x.shape[1] else zeros
        hi = x.max(axis=1).astype(np.float32) if x.shape[1] else zeros
        scale = ((hi.astype(np.float64) - lo) / self.levels).astype(np.float32)
        scale[~(scale > 0)] = 1.0  # constant row: every code is 0 and decodes to lo exactly
        q = np.rint((x - lo[:, None].astype(np.float64)) / scale[:, None].astype(np.float64))
        return Quantized(np.clip(q, 0, self.levels).astype(np.uint16), {"lo": lo, "scale": scale})

    def decode(self, q: Quantized, dtype: np.dtype | type = np.float32) -> np.ndarray:
        """Codes of any shape; ``lo``/``scale`` scalars or per-row arrays broadcast over the last axis."""
        lo64 = np.asarray(q.params["lo"], np.float64)
        scale64 = np.asarray(q.params["scale"], np.float64)
        if lo64.ndim:
            lo64, scale64 = lo64[..., None], scale64[..., None]
        return (lo64 + q.codes.astype(np.float64) * scale64).astype(dtype)

    def error_bound(self, x: np.ndarray) -> np.ndarray:
        x = _rows(x, self.name)
        scale = self.encode(x).params["scale"].astype(np.float64)[:, None]
        return scale * (0.5 + _EPS32 * (self.levels + 1)) + _EPS32 * np.abs(x)

    def check_params(self, params: Mapping[str, object]) -> dict[str, Any]:
        checked = super().check_params(params)
        lo, scale = checked["lo"], checked["scale"]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lo, scale)):
            raise ProtocolError(f"uniform lo and scale must be numbers, got lo={lo!r}, scale={scale!r}")
        if not (math.isfinite(lo) and math.isfinite(scale) and scale >= 0):
            raise ProtocolError(f"invalid uniform quantization parameters lo={lo}, scale={scale}")
        return {"lo": float(lo), "scale": float(scale)}

    def pack(self, codes: np.ndarray) -> bytes:
        if self.bits == 8:
            return codes.astype(np.uint8).tobytes()
        if self.bits == 16:
            return codes.astype("<u2").tobytes()
        shifts = np.arange(self.bits - 1, -1, -1, dtype=np.uint16)
        planes = ((codes[:, None] >> shifts) & 1).astype(np.uint8)  # (count, bits), MSB first
        return np.packbits(planes.ravel()).tobytes()

    def unpack(self, data: bytes, count: int) -> np.ndarray:
        if self.bits == 8:
            return np.frombuffer(data, np.uint8, count).astype(np.uint16)
        if self.bits == 16:
            return np.frombuffer(data, "<u2", count).astype(np.uint16)
        planes = np.unpackbits(np.frombuffer(data, np.uint8))[: count * self.bits].reshape(count, self.bits)
        weights = (1 << np.arange(self.bits - 1, -1, -1)).astype(np.uint16)
        return (planes.astype(np.uint16) * weights).sum(axis=1).astype(np.uint16)
