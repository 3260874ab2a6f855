"""The TCP handshake and session, without I/O: what each side sends, checks and derives.

::

    connector C                                              listener L
    ── hello  {dst, nonce: n_c}          MAC: K          ──►  K = key for C; dst hosted, C admitted
    ◄─ welcome {nonce: n_c, listener_nonce: n_l} MAC: K  ──   (echoes n_c: L holds K, and is live)
    ── ready  {}                         MAC: K_c2l, seq 0 ►  proves C holds K *in this session*
    ◄──────────── frames, MAC: K_c2l / K_l2c with seq 1, 2, … / 0, 1, … ────────────►

``K`` is the long-term key for C (``Keyring.key_for``); ``(K_c2l, K_l2c) = session_keys(K, n_c,
n_l, C, L)``. The listener binds the route to C only after ``ready`` checks out, so a recorded
hello (and anything after it) replayed on a new socket fails: the listener's fresh ``n_l``
gives the replay a session key it cannot have. Sequence numbers are not on the wire; each side
counts the frames of each direction, and the MAC covers the count, so a frame replayed,
dropped or reordered inside a connection fails its MAC and closes the connection.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from meshlearn.errors import ProtocolError
from meshlearn.wire import FrameCodec, Message, decode_message, encode_message
from meshlearn.wire.keys import session_keys

__all__ = ["HELLO", "WELCOME", "READY", "HELLO_MAX_BYTES", "Session", "new_nonce", "hello", "welcome",
           "ready", "parse_hello", "parse_welcome", "check_ready"]

HELLO, WELCOME, READY = "rt.hello", "rt.welcome", "rt.ready"
HELLO_MAX_BYTES = 4096  # a handshake frame is ~150 bytes; unauthenticated peers get no more


def new_nonce() -> str:
    return secrets.token_hex(16)


@dataclass
class Session:
    """The keys and frame counters of one connection (``tx``: what this side sends)."""

    tx_key: bytes | None
    rx_key: bytes | None
    tx_seq: int = 0
    rx_seq: int = 0

    @classmethod
    def derive(cls, key: bytes | None, connector_nonce: str, listener_nonce: str,
               connector: str, listener: str, *, side: str) -> "Session":
        """The session of ``side`` ("connector" or "listener"); unauthenticated runtimes get no keys."""
        if key is None:
            return cls(None, None)
        c2l, l2c = session_keys(key, bytes.fromhex(connector_nonce), bytes.fromhex(listener_nonce),
                                connector, listener)
        return cls(c2l, l2c) if side == "connector" else cls(l2c, c2l)

    def seal(self, frames: FrameCodec, src: str, payload: bytes) -> bytes:
        frame = frames.seal(src, payload, key=self.tx_key, seq=self.tx_seq)
        self.tx_seq += 1
        return frame

    def open(self, parser: FrameCodec, frame: bytes) -> tuple[str, bytes]:
        src, payload = parser.open(frame, key=self.rx_key, seq=self.rx_seq)
        self.rx_seq += 1
        return src, payload


def hello(frames: FrameCodec, key: bytes | None, local: str, remote: str, nonce: str) -> bytes:
    return frames.seal(local, encode_message(Message(HELLO, {"dst": remote, "nonce": nonce})), key=key)


def welcome(frames: FrameCodec, key: bytes | None, local: str, nonce: str, listener_nonce: str) -> bytes:
    meta = {"nonce": nonce, "listener_nonce": listener_nonce}
    return frames.seal(local, encode_message(Message(WELCOME, meta)), key=key)


def ready(frames: FrameCodec, session: Session, local: str) -> bytes:
    return session.seal(frames, local, encode_message(Message(READY, {})))


def parse_hello(payload: bytes) -> tuple[str, str]:
    """``(dst, connector nonce)`` of a hello, or ProtocolError."""
    msg = decode_message(payload, max_bytes=HELLO_MAX_BYTES)
    dst, nonce = msg.meta.get("dst"), msg.meta.get("nonce")
    if msg.kind != HELLO or not isinstance(dst, str) or not _valid_nonce(nonce):
        raise ProtocolError(f"expected {HELLO} with dst and nonce, got {msg!r}")
    return dst, nonce


def parse_welcome(payload: bytes, src: str, remote: str, nonce: str) -> str:
    """The listener's nonce from a welcome that answers our ``nonce``, or ProtocolError."""
    msg = decode_message(payload, max_bytes=HELLO_MAX_BYTES)
    theirs = msg.meta.get("listener_nonce")
    if msg.kind != WELCOME or src != remote or msg.meta.get("nonce") != nonce or not _valid_nonce(theirs):
        raise ProtocolError(f"expected {WELCOME} from {remote!r} echoing our nonce, got {msg.kind!r} from {src!r}")
    return theirs


def check_ready(payload: bytes) -> None:
    if decode_message(payload, max_bytes=HELLO_MAX_BYTES).kind != READY:
        raise ProtocolError(f"expected {READY} to finish the handshake")


def _valid_nonce(nonce: object) -> bool:
    if not (isinstance(nonce, str) and 32 <= len(nonce) <= 128 and len(nonce) % 2 == 0):
        return False
    try:
        bytes.fromhex(nonce)
    except ValueError:
        return False
    return True
