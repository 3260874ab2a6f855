"""Keys: which long-term key authenticates frames with a remote node, and the keys derived from it.

Two ways to hand out keys (:class:`Keyring`):

* **shared** (the simple mode): one cluster secret, held by every member. Any holder can
  claim any node id; the secret keeps outsiders out, not insiders honest.
* **per-node credentials**: an *issuer* (the FL server, the split tail) holds the cluster
  secret and derives one key per node id, ``node_key(secret, id)`` (HKDF-SHA256). A node
  gets only its own key, in a key file written by ``meshlearn keys issue ID``; frames it
  seals prove that id, and it cannot derive anyone else's key. The issuer derives keys on
  demand, so issuing a key needs no state on the server; ``members`` limits which ids it
  accepts at all.

Session keys (``session_keys``) are derived from a long-term key and two fresh nonces, one
from each side of a TCP handshake, one key per direction, so a frame recorded in one session
or direction is worthless in any other.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from pathlib import Path

from meshlearn.errors import UsageError

__all__ = ["Keyring", "hkdf", "node_key", "session_keys", "read_key_file", "write_key_file", "write_private",
           "WEAK_SECRET_BYTES"]

WEAK_SECRET_BYTES = 16  # a cluster secret shorter than this is guessable: warn
_KEY_FILE_TAG = "meshlearn-node-key-v1"


def hkdf(ikm: bytes, *, salt: bytes, info: bytes, length: int = 32) -> bytes:
    """HKDF-SHA256 (RFC 5869): extract with ``salt``, expand with ``info`` to ``length`` bytes."""
    prk = hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out, counter = out + block, counter + 1
    return out[:length]


def node_key(secret: bytes, node_id: str) -> bytes:
    """The credential of ``node_id`` under the cluster ``secret``."""
    return hkdf(secret, salt=b"meshlearn node key v1", info=node_id.encode("utf-8"))


def session_keys(key: bytes, connector_nonce: bytes, listener_nonce: bytes,
                 connector: str, listener: str) -> tuple[bytes, bytes]:
    """``(connector->listener, listener->connector)`` keys of one TCP session."""
    salt = connector_nonce + listener_nonce
    pair = f"{connector}\x00{listener}".encode("utf-8")
    return (hkdf(key, salt=salt, info=b"meshlearn tcp c2l\x00" + pair),
            hkdf(key, salt=salt, info=b"meshlearn tcp l2c\x00" + pair))


@dataclass(frozen=True)
class Keyring:
    """The long-term keys of one runtime; see the module docstring for the modes.

    Exactly one of ``shared``, ``issuer`` or ``own`` is set. ``own`` is ``(node id, key)``.
    """

    shared: bytes | None = None
    issuer: bytes | None = None
    own: tuple[str, bytes] | None = None

    def __post_init__(self):
        if sum(x is not None for x in (self.shared, self.issuer, self.own)) != 1:
            raise UsageError("a Keyring holds exactly one of: shared secret, issuer secret, own credential")
        for key in (self.shared, self.issuer, self.own and self.own[1]):
            if key is not None and (not isinstance(key, (bytes, bytearray)) or not key):
                raise UsageError("keys must be non-empty bytes (e.g. os.urandom(32))")

    def __repr__(self) -> str:  # never print a key
        who = f", node={self.own[0]!r}" if self.own else ""
        return f"Keyring(mode={self.mode!r}{who})"

    @classmethod
    def of(cls, secret: "bytes | Keyring | None") -> "Keyring | None":
        """Bytes mean the shared mode; a Keyring is itself; None means no authentication."""
        if secret is None or isinstance(secret, Keyring):
            return secret
        if not isinstance(secret, (bytes, bytearray)) or not secret:
            raise UsageError("secret must be non-empty bytes (e.g. os.urandom(32)), a Keyring, or None")
        return cls(shared=bytes(secret))

    @property
    def mode(self) -> str:
        return "shared" if self.shared is not None else "issuer" if self.issuer is not None else "credential"

    def key_for(self, remote: str) -> bytes:
        """The key that authenticates frames exchanged with node ``remote``."""
        if self.shared is not None:
            return self.shared
        if self.issuer is not None:
            return node_key(self.issuer, remote)
        return self.own[1]

    def speaks_as(self, local: str) -> bool:
        """Whether frames sealed for hosted node ``local`` can be authenticated at all."""
        return self.own is None or self.own[0] == local


def write_private(path: Path, text: str) -> None:
    """Create ``path`` holding ``text``, readable by its owner only (mode 0600); never overwrites."""
    try:
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(f"{path} exists; pick another path or remove it first") from None
    except OSError as err:
        raise UsageError(f"cannot write {path}: {err.strerror}") from None
    with os.fdopen(handle, "w") as f:
        f.write(text)


def write_key_file(path: Path, node_id: str, key: bytes) -> None:
    """Write a node's credential (see ``write_private``)."""
    write_private(path, f"{_KEY_FILE_TAG} {node_id} {key.hex()}\n")


def read_key_file(path: Path) -> tuple[str, bytes]:
    """``(node id, key)`` from a file written by :func:`write_key_file`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read key file {path}: {getattr(err, 'strerror', None) or err}") from None
    parts = text.split()
    try:
        if len(parts) != 3 or parts[0] != _KEY_FILE_TAG:
            raise ValueError
        return parts[1], bytes.fromhex(parts[2])
    except ValueError:
        raise UsageError(f"{path} is not a meshlearn key file (make one with `meshlearn keys issue ID`)") from None
