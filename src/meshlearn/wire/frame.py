"""Frames: the unit a socket carries (one TCP record or one UDP datagram) and the simulator counts.

Layout (all integers big-endian)::

    b"ML" | version u8 (=1) | flags u8 | src-id length u8 | body length u32 |
    src id (UTF-8, 1-255 bytes) | body (the payload, usually an encoded Message) |
    HMAC-SHA256 (32 bytes, only when flag bit 0 is set)

The first :data:`HEADER_SIZE` (9) bytes are fixed, so a stream reader calls
:meth:`FrameCodec.parse_header` on them and knows exactly how many bytes follow. With a shared
``secret`` every frame carries an HMAC over everything before it, checked in constant time;
a frame without a MAC, with a wrong MAC, or any tampered byte is an
:class:`~meshlearn.errors.AuthError`. Without a secret, frames carry no MAC and a frame that
has one is rejected as a configuration mismatch.

Keys and replay: ``seal``/``open`` take an optional ``key`` (overriding the codec's secret;
``open`` also accepts ``key(src) -> bytes``, for keys that depend on the claimed sender) and an
optional ``seq``: a sequence number that the MAC covers but the frame does not carry. The
TCP transport seals every frame of a session with the session's key and the next number of
its direction, so a replayed, reordered or re-injected frame fails its MAC; UDP carries its
own epoch and sequence number inside the body (``runtime/udp.py``). Without ``key``/``seq`` a
frame proves only that *some* holder of the secret built it, and can be re-sent verbatim.

The MAC gives integrity, not confidentiality. For encryption use TLS at the transport level
(the asyncio runtime's TCP option); frames are unchanged inside it.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from typing import Callable, Union

from meshlearn.errors import AuthError, ProtocolError, UsageError

__all__ = [
    "FrameCodec",
    "HEADER_SIZE",
    "MAC_SIZE",
    "MAGIC",
    "VERSION",
    "MAX_SRC_BYTES",
    "DEFAULT_MAX_FRAME_BYTES",
    "STAMP_BYTES",
]

MAGIC = b"ML"
VERSION = 1
FLAG_MAC = 0x01
_HEADER = struct.Struct(">2sBBBI")
HEADER_SIZE = _HEADER.size  # 9
MAC_SIZE = hashlib.sha256().digest_size  # 32
MAX_SRC_BYTES = 255
MAX_BODY_BYTES = 2**32 - 1
DEFAULT_MAX_FRAME_BYTES = 256 * 1024 * 1024
STAMP_BYTES = 16  # an authenticated datagram's body starts with epoch u64 | seq u64 (runtime/udp.py)
_SEQ = struct.Struct(">Q")
Key = Union[bytes, Callable[[str], bytes]]


class FrameCodec:
    """Seals and opens frames for one node; ``secret`` is shared by all members of a mesh."""

    def __init__(self, secret: bytes | None = None, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES):
        if secret is not None and (not isinstance(secret, (bytes, bytearray)) or not secret):
            raise UsageError("secret must be non-empty bytes (e.g. os.urandom(32)) or None")
        if isinstance(max_frame_bytes, bool) or not isinstance(max_frame_bytes, int):
            raise UsageError(f"max_frame_bytes must be an int, got {max_frame_bytes!r}")
        if max_frame_bytes < HEADER_SIZE + 1 + (MAC_SIZE if secret else 0):
            raise UsageError(f"max_frame_bytes={max_frame_bytes} cannot hold even an empty frame")
        self._secret = bytes(secret) if secret is not None else None
        self.max_frame_bytes = max_frame_bytes

    @property
    def authenticated(self) -> bool:
        """True when frames carry and require an HMAC."""
        return self._secret is not None

    def __repr__(self) -> str:  # never print the secret
        return f"FrameCodec(authenticated={self.authenticated}, max_frame_bytes={self.max_frame_bytes})"

    # ------------------------------------------------------------------------------ sending

    def frame_size(self, src: str, payload_len: int, *, datagram: bool = False) -> int:
        """``len(self.seal(src, payload))`` for a payload of ``payload_len`` bytes, without building it;
        ``datagram``: sent as a UDP datagram, which carries a replay stamp when authenticated."""
        if isinstance(payload_len, bool) or not isinstance(payload_len, int) or payload_len < 0:
            raise UsageError(f"payload_len must be a non-negative int, got {payload_len!r}")
        size = HEADER_SIZE + len(_src_bytes(src)) + payload_len
        return size + (MAC_SIZE + STAMP_BYTES * datagram if self._secret is not None else 0)

    def seal(self, src: str, payload: bytes | bytearray | memoryview, *, key: bytes | None = None,
             seq: int | None = None) -> bytes:
        """Build the frame carrying ``payload`` from node ``src`` (MAC'd with ``key`` and ``seq``
        when given, see the module docstring)."""
        src_b = _src_bytes(src)
        body = memoryview(payload).cast("B")
        size = self.frame_size(src, len(body))
        if len(body) > MAX_BODY_BYTES or size > self.max_frame_bytes:
            raise UsageError(
                f"frame of {size} bytes exceeds the limit {self.max_frame_bytes}; "
                "send less per message or raise max_frame_bytes on every node"
            )
        flags = FLAG_MAC if self._secret is not None else 0
        head = _HEADER.pack(MAGIC, VERSION, flags, len(src_b), len(body)) + src_b
        if self._secret is None:
            return b"".join([head, body])
        return b"".join([head, body, _mac(key or self._secret, seq, head, body)])

    # ---------------------------------------------------------------------------- receiving

    def parse_header(self, first_bytes: bytes | bytearray | memoryview) -> tuple[int, int, bool]:
        """Validate the fixed header (first :data:`HEADER_SIZE` bytes) and return
        ``(src_len, body_len, has_mac)``; the frame is ``HEADER_SIZE + src_len + body_len
        (+ MAC_SIZE if has_mac)`` bytes long."""
        if len(first_bytes) < HEADER_SIZE:
            raise ProtocolError(f"frame header needs {HEADER_SIZE} bytes, got {len(first_bytes)}")
        magic, version, flags, src_len, body_len = _HEADER.unpack(bytes(first_bytes[:HEADER_SIZE]))
        _check_fixed(magic, version, flags, src_len)
        has_mac = bool(flags & FLAG_MAC)
        size = HEADER_SIZE + src_len + body_len + (MAC_SIZE if has_mac else 0)
        if size > self.max_frame_bytes:
            raise ProtocolError(f"frame of {size} bytes exceeds the limit {self.max_frame_bytes}")
        self._check_auth_mode(has_mac)
        return src_len, body_len, has_mac

    def _check_auth_mode(self, has_mac: bool) -> None:
        if self._secret is not None and not has_mac:
            raise AuthError("frame carries no MAC but this node requires one; configure the shared secret on the sender")
        if self._secret is None and has_mac:
            raise AuthError("frame carries a MAC but this node has no secret; configure the same secret on both ends")

    def open(self, frame: bytes | bytearray | memoryview, *, key: Key | None = None,
             seq: int | None = None) -> tuple[str, bytes]:
        """Check a complete frame and return ``(src, payload)``; ``key``/``seq`` as for ``seal``."""
        view = memoryview(frame).cast("B")
        src_len, body_len, has_mac = self.parse_header(view)
        end = HEADER_SIZE + src_len + body_len
        expected = end + (MAC_SIZE if has_mac else 0)
        if len(view) != expected:
            raise ProtocolError(f"frame is {len(view)} bytes but its header declares {expected}")
        src = _decode_src(view[HEADER_SIZE : HEADER_SIZE + src_len])
        if self._secret is not None:
            use = key(src) if callable(key) else key
            expected = _mac(use or self._secret, seq, view[:HEADER_SIZE + src_len], view[HEADER_SIZE + src_len:end])
            if not hmac.compare_digest(expected, bytes(view[end:])):
                why = "replayed or out-of-order frame, " if seq is not None else ""
                raise AuthError(f"frame MAC is wrong: {why}different secret or tampered frame")
        return src, bytes(view[HEADER_SIZE + src_len : end])


def _mac(key: bytes, seq: int | None, head: bytes | memoryview, body: bytes | memoryview) -> bytes:
    mac = hmac.new(key, b"" if seq is None else _SEQ.pack(seq), hashlib.sha256)
    mac.update(head)
    mac.update(body)
    return mac.digest()


def _check_fixed(magic: bytes, version: int, flags: int, src_len: int) -> None:
    if magic != MAGIC:
        raise ProtocolError(f"bad frame magic {magic!r} (expected {MAGIC!r}); not a meshlearn peer?")
    if version != VERSION:
        raise ProtocolError(f"unsupported frame version {version} (this node speaks {VERSION})")
    if flags & ~FLAG_MAC:
        raise ProtocolError(f"unknown frame flags 0x{flags:02x}")
    if src_len == 0:
        raise ProtocolError("frame has an empty source id")


def _src_bytes(src: object) -> bytes:
    if not isinstance(src, str) or not src:
        raise UsageError(f"frame source id must be a non-empty str, got {src!r}")
    try:
        encoded = src.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"frame source id {src!r} is not valid UTF-8") from None
    if len(encoded) > MAX_SRC_BYTES:
        raise UsageError(f"frame source id {src[:20]!r}... exceeds {MAX_SRC_BYTES} UTF-8 bytes")
    return encoded


def _decode_src(raw: memoryview) -> str:
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("frame source id is not valid UTF-8") from None
