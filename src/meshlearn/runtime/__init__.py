"""meshlearn.runtime: the real-network runtime.

* ``aio.py``: :class:`AsyncioRuntime`, a driver over the node host (``meshlearn.host``) that hosts
  nodes over TCP (reliable) and UDP (datagrams);
* ``tcp.py`` / ``udp.py``: the socket transports it drives; ``tls.py``: TLS contexts.

Executors (where tasks run) are in ``meshlearn.executors``.
"""

from meshlearn.runtime.aio import STAT_KEYS, AsyncioRuntime, run_nodes
from meshlearn.runtime.tls import make_tls_contexts
from meshlearn.runtime.udp import MAX_DATAGRAM_BYTES

__all__ = [
    "AsyncioRuntime",
    "MAX_DATAGRAM_BYTES",
    "STAT_KEYS",
    "make_tls_contexts",
    "run_nodes",
]
