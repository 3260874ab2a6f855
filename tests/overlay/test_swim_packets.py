"""SWIM packets: exact sizes without encoding, round trips, and hostile bytes."""

import pytest

from meshlearn.errors import ProtocolError
from meshlearn.overlay.swim.packets import ALIVE, DEAD, SUSPECT, USER, Ack, Gossip, Nack, Ping, PingReq, Sync
from meshlearn.overlay.swim.state import MemberTable, Roster
from meshlearn.wire import decode_payload

UPDATES = ((ALIVE, "n1", 3, ""), (SUSPECT, "nœud-2", 7, "n1"), (DEAD, "n3", 0, "n3"), (USER, "n4", 9, b"\x00hi"))


@pytest.mark.parametrize("cls", [Ping, Ack, PingReq, Nack, Gossip])
def test_probe_packets_round_trip_with_exact_sizes(cls):
    packet = cls(2**32 - 1, "target-ü", UPDATES)
    data = packet.encode()
    assert packet.wire_size == len(data)
    back = decode_payload(data)
    assert type(back) is cls and (back.seq, back.target, back.updates) == (packet.seq, packet.target, UPDATES)


def test_sync_from_a_table_matches_its_encoding():
    roster = Roster(["a", "bb", "ccc", "dddd"])
    table = MemberTable(roster)
    table.set(0, ALIVE, 0, 0.0)
    table.set(2, SUSPECT, 4, 1.0)
    table.set(3, DEAD, 2, 2.0)
    sync = Sync.of_table(table, reply=True)
    data = sync.encode()
    assert sync.wire_size == len(data)
    back = decode_payload(data)
    assert back.reply and back.entries == ((ALIVE, 0, "a"), (SUSPECT, 4, "ccc"), (DEAD, 2, "dddd"))


@pytest.mark.parametrize("data", [
    Ping(1, "x", UPDATES).encode()[:-1],                # truncated
    Ping(1, "x", ()).encode() + b"\x00",                 # trailing byte
    bytes([0x80, 0, 0, 0, 1, 1, ord("x"), 1, 9]),        # unknown update type
    bytes([0x80, 0, 0, 0, 1, 2, 0xFF, 0xFE, 0]),         # id is not UTF-8
    bytes([0x85, 0, 0, 1, 7, 0, 0, 0, 0, 1, ord("a")]),  # unknown state in a Sync
])
def test_malformed_packets_raise_protocol_errors(data):
    with pytest.raises(ProtocolError):
        decode_payload(data)
