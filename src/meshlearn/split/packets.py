"""Split-inference packets between a head and a tail (tags 0xB0–0xBF), struct-encoded.

The tensor channel (``split/channel.py``) already gives every datagram of a cut tensor its own
self-contained body (22-byte ``HEADER`` + payload, decodable alone). These classes carry that
body as a compact :class:`~meshlearn.wire.Packet`, so both runtimes move it like any packet
(the simulator as an object counted by ``wire_size``, the UDP runtime as one HMAC'd frame)::

    TensorChunk  0xB0 | spec u32 | channel packet (HEADER + payload)
    SplitReply   0xB1 | sample u32 | prediction u16 | accepted u16 | total u16

``spec`` is :func:`spec_digest` of the sender's ChannelSpec (the fields that shape the bytes:
quantization, element order, packet size, compression). A tail with another spec cannot decode
the elements correctly, and a permutation mismatch would not even fail loudly, so the tail
compares digests and drops mismatches. ``decode`` checks structure only (lengths, version, index
< total, known quantization and flags); decoding the elements needs the spec and tensor size and
is ``channel.decode_packet``'s job. Big endian, like every packet module; the channel body keeps
its own little-endian layout.

ONLY APPEND TAGS: 0xB0 and 0xB1 are part of the protocol; 0xB2–0xBF are free.
"""

from __future__ import annotations

import json
import struct
import zlib

from meshlearn.errors import ProtocolError, UsageError
from meshlearn.split.channel import HEADER, VERSION, ChannelSpec
from meshlearn.wire.packet import Packet, PacketReader, register_packet

__all__ = ["TensorChunk", "SplitReply", "spec_digest"]

_U32 = struct.Struct(">I")
_REPLY = struct.Struct(">BIHHH")  # tag, sample, prediction, accepted, total
_QUANT_CODES = (0, 1, 2)
_KNOWN_FLAGS = 0x01


def spec_digest(spec: ChannelSpec) -> int:
    """CRC-32 of the ChannelSpec fields both ends must share (not the tail-only deadline/rescale)."""
    shared = dict(quant=spec.quant, bits=spec.element_bits, order=spec.order, perm_seed=spec.perm_seed,
                  per=spec.packet_elements, compress=spec.compress)
    return zlib.crc32(json.dumps(shared, sort_keys=True).encode())


@register_packet
class TensorChunk(Packet):
    """One datagram of one sample's cut tensor: a channel packet plus the sender's spec digest."""

    __slots__ = ("spec", "body")
    TAG = 0xB0
    kind = "split.chunk"

    def __init__(self, spec: int, body: bytes):
        if not 0 <= spec <= 0xFFFFFFFF:
            raise UsageError(f"spec digest must fit in 32 bits, got {spec}")
        self.spec, self.body = spec, bytes(body)

    @property
    def sample(self) -> int:
        """The sample id (the channel packet's ``tag``)."""
        return HEADER.unpack_from(self.body)[4]

    @property
    def index(self) -> int:
        return HEADER.unpack_from(self.body)[5]

    @property
    def total(self) -> int:
        return HEADER.unpack_from(self.body)[6]

    @property
    def wire_size(self) -> int:
        return 5 + len(self.body)

    def encode(self) -> bytes:
        return bytes([self.TAG]) + _U32.pack(self.spec) + self.body

    @classmethod
    def decode(cls, data: bytes) -> "TensorChunk":
        reader = PacketReader.of(cls, data)
        spec = reader.u32()
        body = reader.take(len(reader.data) - reader.pos)
        if len(body) < HEADER.size:
            raise ProtocolError(f"TensorChunk body has {len(body)} bytes, shorter than the {HEADER.size}-byte "
                                "channel header")
        version, quant, _, flags, _, index, total, _, _, _ = HEADER.unpack_from(body)
        if version != VERSION:
            raise ProtocolError(f"TensorChunk channel version {version}, expected {VERSION}")
        if quant not in _QUANT_CODES or flags & ~_KNOWN_FLAGS:
            raise ProtocolError(f"TensorChunk has unknown quantization code {quant} or flags {flags:#x}")
        if index >= total:
            raise ProtocolError(f"TensorChunk is packet {index} of {total}")
        return cls(spec, body)

    def __repr__(self) -> str:
        return f"TensorChunk(sample={self.sample}, {self.index}/{self.total}, {len(self.body)} B)"


@register_packet
class SplitReply(Packet):
    """The tail's answer for one sample: predicted class and how many packets it used of how many."""

    __slots__ = ("sample", "prediction", "accepted", "total")
    TAG = 0xB1
    kind = "split.reply"

    def __init__(self, sample: int, prediction: int, accepted: int, total: int):
        for name, value, top in (("sample", sample, 0xFFFFFFFF), ("prediction", prediction, 0xFFFF),
                                 ("accepted", accepted, 0xFFFF), ("total", total, 0xFFFF)):
            if not 0 <= int(value) <= top:
                raise UsageError(f"SplitReply.{name} must be in 0..{top}, got {value}")
        self.sample, self.prediction, self.accepted, self.total = int(sample), int(prediction), int(accepted), int(total)

    @property
    def wire_size(self) -> int:
        return _REPLY.size

    def encode(self) -> bytes:
        return _REPLY.pack(self.TAG, self.sample, self.prediction, self.accepted, self.total)

    @classmethod
    def decode(cls, data: bytes) -> "SplitReply":
        reader = PacketReader.of(cls, data)
        sample, prediction, accepted, total = reader.u32(), reader.u16(), reader.u16(), reader.u16()
        reader.end()
        if accepted > total:
            raise ProtocolError(f"SplitReply says {accepted} of {total} packets were accepted")
        return cls(sample, prediction, accepted, total)

    def __repr__(self) -> str:
        return f"SplitReply(sample={self.sample}, prediction={self.prediction}, {self.accepted}/{self.total})"
