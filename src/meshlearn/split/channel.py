"""The tensor channel between a split model's head and tail: pure, numpy only, no I/O.

Rule: everything that happens to the cut tensor between ``head`` and ``tail`` lives here — the
choice of quantisation scheme (its arithmetic is ``wire/quant.py``'s), packetization, per-packet
compression, loss, the deadline cut, reconstruction and the byte / latency accounting. Time
(``now``) and randomness (a ``Generator``) are arguments.

Pipeline for one sample (``transmit``)::

    flat tensor ─ quantize ─▶ codes ─ order (sequential | seeded permutation) ─▶ packets of E elements
      ─ [zstd/lz4 per packet] ─▶ datagrams ─ deliver (loss model | Link | Network) ─▶ Delivery
      ─ cut (deadline / reach rate) ─▶ accepted packets ─ reconstruct (zero-fill, [rescale]) ─▶ tensor

Packet format (little endian; ``HEADER``, 22 bytes, then the payload)::

    version u8 | quant u8 (0 fp32, 1 fp16, 2 uniform) | bits u8 | flags u8 (bit 0: compressed)
    tag u32 (sample id) | index u16 | total u16 | count u16 | lo f32 | scale f32

Every packet carries the per-tensor quantization parameters and its own index, so **each packet
decodes on its own**: packet ``i`` holds the elements ``order[i*E : i*E + count]`` of the flat
tensor, where ``order`` is ``arange(n)`` or ``default_rng(perm_seed).permutation(n)`` — the
receiver rebuilds it from the spec. ``quant`` names a scheme of ``wire/quant.py``: ``fp32`` and
``fp16`` casts, or ``uniform``, per-sample min-max with ``bits`` (1..16) per element,
``x ≈ lo + q * scale`` with ``q`` in ``0 .. 2**bits - 1`` (|error| <= scale / 2), codes bit-packed
per packet; ``lo`` and ``scale`` are 0 for the casts (and ignored on receipt). Compression is per
packet and only used when it shrinks that packet (the flag says which).

Loss: a packet is *accepted* when it arrived and arrived no later than the cut time
(``cut_delivery``): the earliest of the deadline, the moment ``reach_rate`` of the packets have
arrived, and the moment all packets have arrived. Without a deadline the tail runs when the last
packet that does arrive has arrived (an oracle receiver; a real one needs a deadline). Lost
elements are zero-filled; ``rescale`` optionally multiplies survivors by 1/(1-p) with p the
observed element loss of this tensor (``observed``) or a fixed p (``fixed``, e.g. the dropout
rate a COMtune model was tuned with) — use the same convention as in training.

Wire bytes per sample = sum over packets of (packet length + ``header_bytes``, the IP+UDP header).
``simulate_batch`` is the vectorized twin of ``transmit`` for accuracy sweeps over many samples
(same quantizer and element masks; tested equal to the packet path).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Iterable, Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from meshlearn.errors import ProtocolError, UsageError
from meshlearn.net.devices import DeviceProfile, compute_time
from meshlearn.net.link import Link
from meshlearn.net.loss import LossModel
from meshlearn.net.network import Network
from meshlearn.net.packetizer import DEFAULT_HEADER_BYTES
from meshlearn.wire.compress import COMPRESSORS
from meshlearn.wire.quant import QuantScheme, Quantized, get_scheme, reject_old_name

__all__ = [
    "HEADER", "VERSION", "ChannelSpec", "DecodedPacket", "Deliver", "Delivery", "ChannelResult", "Latency",
    "packet_plan", "encode_packets", "decode_packet", "reconstruct", "element_mask",
    "over_loss_model", "over_link", "over_network", "cut_delivery", "transmit", "simulate_batch",
    "end_to_end_latency",
]

HEADER = struct.Struct("<BBBBIHHHff")
VERSION = 1
_QUANT_CODE = {"fp32": 0, "fp16": 1, "uniform": 2}
_HEADER_PARAMS = ("lo", "scale")  # the header's two f32 parameter slots
_FLAG_COMPRESSED = 0x01
_MAX_PACKETS = 0xFFFF  # index and total are u16


class ChannelSpec(BaseModel):
    """How the cut tensor crosses the network.

    Invalid values raise pydantic's ValidationError (a ValueError); the config layer reports them
    as one ``key: reason`` line (``meshlearn.config.validate_config``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    quant: Literal["fp32", "fp16", "uniform"] = Field(
        "fp32", description="element encoding (a wire/quant.py scheme): fp32 (exact), fp16, uniform (min-max, bits)")
    bits: int = Field(8, ge=1, le=16, description="bits per element for quant='uniform' (ignored otherwise)")
    order: Literal["sequential", "permuted"] = Field(
        "permuted", description="element order in packets; permuted spreads a lost packet over the tensor")
    perm_seed: int = Field(0, ge=0, description="seed of the permutation; head and tail must agree")
    mtu: int = Field(1500, gt=0, description="datagram size on the wire incl. header_bytes, bytes")
    header_bytes: int = Field(DEFAULT_HEADER_BYTES, ge=0, description="per-packet IP+UDP header bytes")
    elements_per_packet: int | None = Field(
        None, ge=1, description="elements per packet; None = as many as fit the MTU (the lab used 512 fp16)")
    compress: Literal["none", "zstd", "lz4"] = Field("none", description="per-packet lossless compression")
    level: int = Field(3, description="compression level (zstd)")
    deadline_s: float | None = Field(None, ge=0, description="tail runs at most this long after sending")
    reach_rate: float | None = Field(
        None, gt=0, le=1, description="tail runs once this fraction of the packets has arrived")
    rescale: Literal["none", "observed", "fixed"] = Field(
        "none", description="scale survivors by 1/(1-p): p observed per tensor, or rescale_p")
    rescale_p: float = Field(0.0, ge=0, lt=1, description="p for rescale='fixed'")

    @field_validator("quant", mode="before")
    @classmethod
    def _renamed(cls, value: object) -> object:
        return reject_old_name(value, "int8", "quant='uniform' (bits=8 is the default)")

    @model_validator(mode="after")
    def _packet_fits(self) -> "ChannelSpec":
        room = self.mtu - self.header_bytes - HEADER.size
        if room < math.ceil(self.element_bits / 8):
            raise ValueError(f"mtu {self.mtu} leaves no room for one element after "
                             f"{self.header_bytes} + {HEADER.size} header bytes")
        if self.elements_per_packet is not None and _payload_len(self.elements_per_packet, self.element_bits) > room:
            raise ValueError(f"{self.elements_per_packet} elements of {self.element_bits} bits do not fit "
                             f"{room} payload bytes; lower elements_per_packet or raise mtu")
        return self

    @property
    def scheme(self) -> QuantScheme:
        """The quantisation scheme ``quant`` (with ``bits`` for uniform) names."""
        return _scheme(self.quant, self.bits)

    @property
    def element_bits(self) -> int:
        """Bits one element takes on the wire (before compression)."""
        return self.scheme.bits

    @property
    def packet_elements(self) -> int:
        """Elements per packet (``elements_per_packet`` or as many as fit the MTU)."""
        if self.elements_per_packet is not None:
            return self.elements_per_packet
        return (self.mtu - self.header_bytes - HEADER.size) * 8 // self.element_bits


@lru_cache(maxsize=None, typed=True)
def _scheme(quant: str, bits: int) -> QuantScheme:
    return get_scheme("uniform", bits=bits) if quant == "uniform" else get_scheme(quant)


def _payload_len(count: int, bits: int) -> int:
    return -(-int(count) * int(bits) // 8)


# ---------------------------------------------------------------- packets


@lru_cache(maxsize=64)
def _order(n: int, order: str, perm_seed: int) -> np.ndarray:
    out = np.arange(n) if order == "sequential" else np.random.default_rng(perm_seed).permutation(n)
    out.setflags(write=False)
    return out


def packet_plan(n_elements: int, spec: ChannelSpec) -> tuple[np.ndarray, int, int]:
    """``(order, elements_per_packet, packets)`` for a flat tensor of ``n_elements``.

    Packet ``i`` carries elements ``order[i*E : (i+1)*E]``; an empty tensor still takes one packet.
    """
    if int(n_elements) != n_elements or n_elements < 0:
        raise UsageError(f"n_elements must be a non-negative integer, got {n_elements!r}")
    per = spec.packet_elements
    packets = max(1, -(-int(n_elements) // per))
    if packets > _MAX_PACKETS:
        raise UsageError(f"{n_elements} elements need {packets} packets, over the limit {_MAX_PACKETS}; "
                         "raise mtu or quantize harder")
    return _order(int(n_elements), spec.order, spec.perm_seed), per, packets


def encode_packets(x: np.ndarray, spec: ChannelSpec, tag: int = 0) -> list[bytes]:
    """Encode one sample's cut tensor (any shape) into self-contained datagram payloads."""
    if not 0 <= int(tag) <= 0xFFFFFFFF:
        raise UsageError(f"tag must fit in 32 bits, got {tag}")
    flat = np.asarray(x, dtype=np.float32).reshape(1, -1)
    scheme = spec.scheme
    q = scheme.encode(flat)
    lo, scale = (float(q.params[k][0]) if k in q.params else 0.0 for k in _HEADER_PARAMS)
    order, per, total = packet_plan(flat.shape[1], spec)
    codec = COMPRESSORS.get(spec.compress) if spec.compress != "none" else None
    packets = []
    for i in range(total):
        chunk = q.codes[0, order[i * per : (i + 1) * per]]
        raw, flags = scheme.pack(chunk), 0
        if codec is not None:
            blob = codec.compress(raw, spec.level)
            if len(blob) < len(raw):
                raw, flags = blob, _FLAG_COMPRESSED
        head = HEADER.pack(VERSION, _QUANT_CODE[spec.quant], scheme.bits, flags, int(tag), i, total,
                           len(chunk), lo, scale)
        packets.append(head + raw)
    return packets


@dataclass(frozen=True, eq=False)
class DecodedPacket:
    """One packet's content: the flat element ``positions`` it fills and their ``values``."""

    tag: int
    index: int
    total: int
    positions: np.ndarray
    values: np.ndarray


def decode_packet(data: bytes, spec: ChannelSpec, n_elements: int) -> DecodedPacket:
    """Decode one datagram alone; anything malformed or inconsistent is a :class:`ProtocolError`."""
    if len(data) < HEADER.size:
        raise ProtocolError(f"split packet has {len(data)} bytes, shorter than its {HEADER.size}-byte header")
    version, quant, bits, flags, tag, index, total, count, lo, scale = HEADER.unpack_from(data)
    if version != VERSION:
        raise ProtocolError(f"split packet version {version}, expected {VERSION}")
    if quant != _QUANT_CODE[spec.quant] or bits != spec.element_bits:
        raise ProtocolError(f"packet quantization (code {quant}, {bits} bits) does not match the spec "
                            f"({spec.quant}, {spec.element_bits} bits)")
    order, per, expected_total = packet_plan(n_elements, spec)
    if total != expected_total or index >= total:
        raise ProtocolError(f"packet {index} of {total}, expected {expected_total} packets for {n_elements} elements")
    positions = order[index * per : (index + 1) * per]
    if count != len(positions):
        raise ProtocolError(f"packet {index} claims {count} elements, expected {len(positions)}")
    scheme, slots = spec.scheme, dict(zip(_HEADER_PARAMS, (lo, scale)))
    params = scheme.check_params({k: slots[k] for k in scheme.params})
    payload = _payload(data[HEADER.size :], flags, count, spec)
    values = scheme.decode(Quantized(scheme.unpack(payload, count), params))
    return DecodedPacket(tag, index, total, positions, values)


def _payload(body: bytes, flags: int, count: int, spec: ChannelSpec) -> bytes:
    expected = _payload_len(count, spec.element_bits)
    if flags & ~_FLAG_COMPRESSED:
        raise ProtocolError(f"split packet has unknown flags {flags:#x}")
    if flags & _FLAG_COMPRESSED:
        if spec.compress == "none":
            raise ProtocolError("packet is compressed but the spec says compress='none'")
        return COMPRESSORS.get(spec.compress).decompress(body, expected)
    if len(body) != expected:
        raise ProtocolError(f"packet payload has {len(body)} bytes, expected {expected} for {count} elements")
    return body


def reconstruct(received: Iterable[bytes], spec: ChannelSpec, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Rebuild a tensor of ``shape`` from the packets that arrived (any order, any subset).

    Returns ``(tensor float32, element mask)``: lost elements are 0 (then ``rescale`` applies).
    Packets of different tags in one call are a :class:`ProtocolError`.
    """
    shape = tuple(int(d) for d in shape)
    n = int(np.prod(shape, dtype=np.int64))
    flat, mask, tags = np.zeros(n, np.float32), np.zeros(n, bool), set()
    for data in received:
        pkt = decode_packet(data, spec, n)
        tags.add(pkt.tag)
        flat[pkt.positions] = pkt.values
        mask[pkt.positions] = True
    if len(tags) > 1:
        raise ProtocolError(f"packets of several samples (tags {sorted(tags)}) given to one reconstruct")
    return _rescale(flat[None], mask[None], spec)[0].reshape(shape), mask.reshape(shape)


def _rescale(x: np.ndarray, mask: np.ndarray, spec: ChannelSpec) -> np.ndarray:
    """Zero-fill lost elements of rows ``x`` (N, n) and apply the spec's rescaling convention."""
    x = np.where(mask, x, np.float32(0))
    if spec.rescale == "fixed":
        return (x / np.float32(1.0 - spec.rescale_p)).astype(np.float32)
    if spec.rescale == "observed":
        kept = mask.sum(axis=1, keepdims=True)
        factor = np.where(kept > 0, mask.shape[1] / np.maximum(kept, 1), 1.0)
        return (x * factor).astype(np.float32)
    return x


def element_mask(packet_mask: np.ndarray, n_elements: int, spec: ChannelSpec) -> np.ndarray:
    """Per-element arrival mask ``(..., n_elements)`` from a per-packet mask ``(..., packets)``."""
    order, per, total = packet_plan(n_elements, spec)
    packet_mask = np.asarray(packet_mask, bool)
    if packet_mask.shape[-1] != total:
        raise UsageError(f"packet mask has {packet_mask.shape[-1]} packets, expected {total} for {n_elements} elements")
    out = np.empty((*packet_mask.shape[:-1], n_elements), bool)
    out[..., order] = np.repeat(packet_mask, per, axis=-1)[..., :n_elements]
    return out


# ---------------------------------------------------------------- delivery


@dataclass(frozen=True, eq=False)
class Delivery:
    """Per-packet outcome: ``arrived`` (not lost) and ``arrival_s`` (when it did or would arrive)."""

    arrived: np.ndarray
    arrival_s: np.ndarray
    start_s: float

    def __post_init__(self) -> None:
        if self.arrived.shape != self.arrival_s.shape or self.arrived.ndim != 1:
            raise UsageError(f"arrived {self.arrived.shape} and arrival_s {self.arrival_s.shape} must be equal 1-D")


Deliver = Callable[[Sequence[int], float], Delivery]


def over_loss_model(loss: LossModel, rng: np.random.Generator, *, bandwidth_bps: float = math.inf,
                    latency_s: float = 0.0, header_bytes: int = DEFAULT_HEADER_BYTES) -> Deliver:
    """Deliver through a bare loss model: packets serialized back to back at ``bandwidth_bps``."""
    if not bandwidth_bps > 0 or latency_s < 0:
        raise UsageError(f"need bandwidth_bps > 0 and latency_s >= 0, got {bandwidth_bps}, {latency_s}")

    def deliver(sizes: Sequence[int], now: float) -> Delivery:
        wire = np.asarray(sizes, np.float64) + header_bytes
        arrival = now + np.cumsum(wire) * 8.0 / bandwidth_bps + latency_s
        return Delivery(~loss.sample(len(wire), rng), arrival, float(now))

    return deliver


def over_link(link: Link) -> Deliver:
    """Deliver through a ``Link`` (its queue, bandwidth, latency, jitter and loss), one datagram per packet."""
    return _per_packet(lambda size, now: link.transmit_datagram(size, now), link.max_payload)


def over_network(network: Network, src: str, dst: str) -> Deliver:
    """Deliver through a ``Network`` from ``src`` to ``dst`` (unreachable ⇒ every packet lost)."""
    return _per_packet(lambda size, now: network.transmit_datagram(src, dst, size, now),
                       network.link(src, dst).max_payload)


def _per_packet(send: Callable[[int, float], Any], max_payload: int) -> Deliver:
    def deliver(sizes: Sequence[int], now: float) -> Delivery:
        arrived, arrival = np.zeros(len(sizes), bool), np.full(len(sizes), math.inf)
        for i, size in enumerate(sizes):
            if size > max_payload:
                raise UsageError(f"packet of {size} bytes exceeds the link's {max_payload}-byte payload; "
                                 "lower the ChannelSpec mtu to the link's")
            result = send(int(size), now)
            if result is not None:
                arrived[i], arrival[i] = bool(result.mask[0]), result.arrival
        return Delivery(arrived, arrival, float(now))

    return deliver


def cut_delivery(delivery: Delivery, spec: ChannelSpec) -> tuple[np.ndarray, float]:
    """``(accepted mask, cut time)``: which packets the tail uses and when it starts (see module doc)."""
    times = np.sort(delivery.arrival_s[delivery.arrived])
    total = len(delivery.arrived)
    candidates = [times[-1]] if len(times) == total and total else []
    if spec.deadline_s is not None:
        candidates.append(delivery.start_s + spec.deadline_s)
    if spec.reach_rate is not None:
        need = max(1, math.ceil(spec.reach_rate * total - 1e-9))
        if len(times) >= need:
            candidates.append(times[need - 1])
    if candidates:
        t_cut = float(min(candidates))
    else:  # no deadline and something was lost: the oracle receiver stops at the last arrival
        t_cut = float(times[-1]) if len(times) else delivery.start_s
    return delivery.arrived & (delivery.arrival_s <= t_cut), t_cut


@dataclass(frozen=True, eq=False)
class ChannelResult:
    """What the tail gets for one sample, and what it cost on the wire."""

    tensor: np.ndarray
    mask: np.ndarray
    packets: int
    accepted: int
    wire_bytes: int
    transfer_s: float

    @property
    def fraction_received(self) -> float:
        """Fraction of the tensor's elements the tail received."""
        return float(self.mask.mean()) if self.mask.size else 1.0


def transmit(x: np.ndarray, spec: ChannelSpec, deliver: Deliver, now: float = 0.0, tag: int = 0) -> ChannelResult:
    """Send one sample's cut tensor ``x`` at ``now`` through ``deliver`` and rebuild it at the tail."""
    packets = encode_packets(x, spec, tag)
    delivery = deliver([len(p) for p in packets], float(now))
    accepted, t_cut = cut_delivery(delivery, spec)
    tensor, mask = reconstruct((p for p, ok in zip(packets, accepted) if ok), spec, np.shape(x))
    wire = sum(len(p) for p in packets) + len(packets) * spec.header_bytes
    return ChannelResult(tensor, mask, len(packets), int(accepted.sum()), wire, t_cut - float(now))


def simulate_batch(z: np.ndarray, spec: ChannelSpec, packet_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vectorized channel for ``N`` samples ``z`` (N, ...): quantize, lose, zero-fill, rescale.

    ``packet_mask`` (N, packets) says which packets were accepted (e.g. ``~loss.sample(N * P, rng)``
    reshaped). Returns ``(z_hat, element_mask)`` shaped like ``z``; equals ``transmit`` per sample.
    """
    z = np.asarray(z, np.float32)
    flat = z.reshape(len(z), -1)
    scheme = spec.scheme
    values = scheme.decode(scheme.encode(flat))
    mask = element_mask(packet_mask, flat.shape[1], spec)
    return _rescale(values, mask, spec).reshape(z.shape), mask.reshape(z.shape)


# ---------------------------------------------------------------- latency


@dataclass(frozen=True)
class Latency:
    """End-to-end latency of one split inference, seconds: head + transfer + tail."""

    device_s: float
    transfer_s: float
    server_s: float

    @property
    def total_s(self) -> float:
        return self.device_s + self.transfer_s + self.server_s


def end_to_end_latency(head_flops: float, tail_flops: float, transfer_s: float, device: DeviceProfile,
                       server: DeviceProfile) -> Latency:
    """Head FLOPs on ``device`` + ``transfer_s`` + tail FLOPs on ``server``."""
    if transfer_s < 0:
        raise UsageError(f"transfer_s must be >= 0, got {transfer_s}")
    return Latency(compute_time(device, head_flops), float(transfer_s), compute_time(server, tail_flops))
