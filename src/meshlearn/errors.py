"""The one error hierarchy of meshlearn.

    MeshlearnError
    ├── UsageError            you called it wrong (bad argument, bad state); fix the caller
    │   ├── ConfigError       a config file or --set override is invalid (key, reason, valid choices)
    │   └── RegistryError     unknown or duplicate plugin name (lists the valid names)
    ├── PeerError             a peer misbehaved; the node drops the input and keeps running
    │   ├── ProtocolError     malformed, oversized or unknown message / frame
    │   └── AuthError         missing or wrong authentication
    ├── DataError             a dataset file is missing or malformed
    └── StoreError            a run directory is missing, locked or inconsistent

Messages say how to fix the problem, not only what went wrong.
"""

from __future__ import annotations

__all__ = [
    "MeshlearnError",
    "UsageError",
    "ConfigError",
    "RegistryError",
    "PeerError",
    "ProtocolError",
    "AuthError",
    "DataError",
    "StoreError",
]


class MeshlearnError(Exception):
    """Base class of every error meshlearn raises on purpose."""


class UsageError(MeshlearnError, ValueError):
    """The caller passed something invalid; the message says what to pass instead."""


class ConfigError(UsageError):
    """A config value is invalid. ``key`` is the dotted path, ``choices`` the valid values."""

    def __init__(self, key: str, reason: str, choices: list[str] | None = None):
        self.key, self.reason, self.choices = key, reason, choices or []
        text = f"{key}: {reason}" if key else reason
        if self.choices:
            text += f" (valid: {', '.join(self.choices)})"
        super().__init__(text)


class RegistryError(UsageError, KeyError):
    """Unknown or duplicate name in a plugin registry."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class PeerError(MeshlearnError):
    """Input from a peer was rejected; the receiver drops it and keeps running."""


class ProtocolError(PeerError):
    """A frame or message is malformed, oversized, of unknown type or of the wrong shape."""


class AuthError(PeerError):
    """A peer failed authentication (no key, wrong key, bad MAC)."""


class DataError(MeshlearnError):
    """A dataset could not be loaded; the message names the file and the expected format."""


class StoreError(MeshlearnError):
    """A run directory is missing, corrupt or cannot be resumed."""
