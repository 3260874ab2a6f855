"""meshlearn.runtime: the real-network runtime and the executors both runtimes share.

* ``aio.py``: :class:`AsyncioRuntime`, hosting nodes over TCP (reliable) and UDP (datagrams);
* ``tcp.py`` / ``udp.py``: the socket transports it drives; ``tls.py``: TLS contexts;
* ``executor.py``: where tasks run (inline, ...).
"""

from meshlearn.runtime.aio import STAT_KEYS, AioContext, AsyncioRuntime, run_nodes
from meshlearn.runtime.executor import EXECUTORS, Executor, Handle, InlineExecutor, Workspace, make_executor
from meshlearn.runtime.tls import make_tls_contexts
from meshlearn.runtime.udp import MAX_DATAGRAM_BYTES

__all__ = [
    "AioContext",
    "AsyncioRuntime",
    "EXECUTORS",
    "Executor",
    "Handle",
    "InlineExecutor",
    "MAX_DATAGRAM_BYTES",
    "STAT_KEYS",
    "Workspace",
    "make_executor",
    "make_tls_contexts",
    "run_nodes",
]
