"""Packets: the compact payload format, told apart from envelopes by the first byte."""

import struct

import pytest

from meshlearn.errors import ProtocolError, UsageError
from meshlearn.wire import Message, Packet, decode_payload, encode_payload, register_packet


@register_packet
class _Probe(Packet):
    __slots__ = ("seq",)
    TAG = 0xFE
    kind = "test.probe"

    def __init__(self, seq: int):
        self.seq = seq

    @property
    def wire_size(self) -> int:
        return 5

    def encode(self) -> bytes:
        return struct.pack(">BI", self.TAG, self.seq)

    @classmethod
    def decode(cls, data: bytes) -> "_Probe":
        return cls(struct.unpack(">BI", data)[1])


def test_payloads_round_trip_both_formats():
    packet = decode_payload(encode_payload(_Probe(7)))
    assert isinstance(packet, _Probe) and packet.seq == 7
    msg = Message.make("a.b", note=1)
    assert decode_payload(encode_payload(msg)) == msg


def test_unknown_tags_and_malformed_packets_raise_protocol_errors():
    with pytest.raises(ProtocolError, match="unknown packet type"):
        decode_payload(bytes([0xFD, 1, 2]))
    with pytest.raises(ProtocolError, match="malformed _Probe"):
        decode_payload(bytes([0xFE, 1]))
    with pytest.raises(ProtocolError, match="empty"):
        decode_payload(b"")


def test_tags_are_checked_at_registration():
    class Low(Packet):
        TAG = 0x10

    class Clash(Packet):
        TAG = 0xFE

    with pytest.raises(UsageError, match="0x80"):
        register_packet(Low)
    with pytest.raises(UsageError, match="taken by _Probe"):
        register_packet(Clash)
