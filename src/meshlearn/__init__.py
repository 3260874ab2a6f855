"""meshlearn: learning and inference across machines on unreliable networks.

The top-level namespace holds what a user writing nodes or driving runs needs; subpackages
(`meshlearn.net`, `.wire`, `.fl`, `.data`, `.learn`, `.store`, `.config`, `.experiment`) hold the
rest. Importing `meshlearn` does not import torch.
"""

from meshlearn.errors import (
    AuthError,
    ConfigError,
    DataError,
    MeshlearnError,
    PeerError,
    ProtocolError,
    RegistryError,
    StoreError,
    UsageError,
)
from meshlearn.executors import InlineExecutor
from meshlearn.net import LinkSpec, Network
from meshlearn.node import Context, Node
from meshlearn.registry import Registry
from meshlearn.runtime import AsyncioRuntime
from meshlearn.sim.runtime import MemorySink, Simulator
from meshlearn.wire import FrameCodec, Message, TensorCodec

__version__ = "0.1.0"

__all__ = [
    "AsyncioRuntime",
    "AuthError",
    "ConfigError",
    "Context",
    "DataError",
    "FrameCodec",
    "InlineExecutor",
    "LinkSpec",
    "MemorySink",
    "MeshlearnError",
    "Message",
    "Network",
    "Node",
    "PeerError",
    "ProtocolError",
    "Registry",
    "RegistryError",
    "Simulator",
    "StoreError",
    "TensorCodec",
    "UsageError",
]
