"""Split-inference packets between a head and a tail (tags 0xB0–0xBF), struct-encoded.

The tensor channel (``split/channel.py``) already gives every datagram of a cut tensor its own
self-contained body (22-byte ``HEADER`` + payload, decodable alone). These classes carry that
body as a compact :class:`~meshlearn.wire.Packet`, so both runtimes move it like any packet
(the simulator as an object counted by ``wire_size``, the UDP runtime as one HMAC'd frame)::

    TensorChunk    0xB0 | spec u32 | channel packet (HEADER + payload)
    SplitReply     0xB1 | sample u32 | prediction u16 | accepted u16 | total u16
    SplitSettings  0xB2 | spec u32 | JSON of the shared settings (sorted keys; at most 512 bytes)

``spec`` is :func:`spec_digest` of the sender's ChannelSpec (the fields that shape the bytes:
quantization, element order, packet size, compression). A tail with another spec cannot decode
the elements correctly, and a permutation mismatch would not even fail loudly, so the tail
compares digests and drops mismatches. It answers a head whose chunks carry another digest with
``SplitSettings`` (at most once per head per second), so the head can say which setting differs
instead of failing silently; ``spec`` is then the digest of ``settings`` (checked on decode).
``decode`` checks structure only (lengths, version, index
< total, known quantization and flags); decoding the elements needs the spec and tensor size and
is ``channel.decode_packet``'s job. Big endian, like every packet module; the channel body keeps
its own little-endian layout.

ONLY APPEND TAGS: 0xB0, 0xB1 and 0xB2 are part of the protocol; 0xB3–0xBF are free.
"""

from __future__ import annotations

import json
import struct
import zlib

from meshlearn.errors import ProtocolError, UsageError
from meshlearn.split.channel import HEADER, VERSION, ChannelSpec
from meshlearn.wire.packet import Packet, PacketReader, register_packet

__all__ = ["TensorChunk", "SplitReply", "SplitSettings", "shared_settings", "spec_digest"]

_U32 = struct.Struct(">I")
_REPLY = struct.Struct(">BIHHH")  # tag, sample, prediction, accepted, total
_QUANT_CODES = (0, 1, 2)
_KNOWN_FLAGS = 0x01
_MAX_SETTINGS_BYTES = 512


def shared_settings(spec: ChannelSpec) -> dict[str, str | int]:
    """The ChannelSpec values both ends must share (not the tail-only deadline/rescale).

    ``bits`` is bits per element on the wire (16 for fp16), ``per`` elements per packet (from
    ``elements_per_packet`` or the MTU)."""
    return dict(quant=spec.quant, bits=spec.element_bits, order=spec.order, perm_seed=spec.perm_seed,
                per=spec.packet_elements, compress=spec.compress)


def _digest_of(settings: dict) -> int:
    return zlib.crc32(json.dumps(settings, sort_keys=True).encode())


def spec_digest(spec: ChannelSpec) -> int:
    """CRC-32 of :func:`shared_settings` (sorted-key JSON): what every chunk carries."""
    return _digest_of(shared_settings(spec))


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


@register_packet
class SplitSettings(Packet):
    """The tail's channel settings, sent to a head whose chunks carry another spec digest."""

    __slots__ = ("spec", "settings", "_json")
    TAG = 0xB2
    kind = "split.settings"

    def __init__(self, spec: int, settings: dict[str, str | int]):
        if not 0 <= spec <= 0xFFFFFFFF:
            raise UsageError(f"spec digest must fit in 32 bits, got {spec}")
        self.spec, self.settings = spec, dict(settings)
        self._json = json.dumps(self.settings, sort_keys=True).encode()
        if len(self._json) > _MAX_SETTINGS_BYTES:
            raise UsageError(f"channel settings take {len(self._json)} bytes of JSON, over {_MAX_SETTINGS_BYTES}")

    @classmethod
    def of(cls, spec: ChannelSpec) -> "SplitSettings":
        """The message a tail with ``spec`` sends."""
        settings = shared_settings(spec)
        return cls(_digest_of(settings), settings)

    @property
    def wire_size(self) -> int:
        return 5 + len(self._json)

    def encode(self) -> bytes:
        return bytes([self.TAG]) + _U32.pack(self.spec) + self._json

    @classmethod
    def decode(cls, data: bytes) -> "SplitSettings":
        reader = PacketReader.of(cls, data)
        spec = reader.u32()
        raw = reader.take(len(reader.data) - reader.pos)
        if len(raw) > _MAX_SETTINGS_BYTES:
            raise ProtocolError(f"SplitSettings has {len(raw)} bytes of settings, over {_MAX_SETTINGS_BYTES}")
        settings = _settings_table(raw)
        if _digest_of(settings) != spec:
            raise ProtocolError(f"SplitSettings digest {spec:#010x} is not the digest of its settings")
        return cls(spec, settings)

    def __repr__(self) -> str:
        return f"SplitSettings({self.spec:#010x}, {self.settings})"


def _settings_table(raw: bytes) -> dict[str, str | int]:
    """The JSON table of a SplitSettings: string keys, string or integer values."""
    try:
        settings = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"SplitSettings settings are not JSON: {exc}") from None
    if not isinstance(settings, dict):
        raise ProtocolError(f"SplitSettings settings must be a table, got {type(settings).__name__}")
    for key, value in settings.items():
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ProtocolError(f"SplitSettings setting {key!r} must be a string or an integer, got {value!r}")
    return settings
