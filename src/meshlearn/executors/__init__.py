"""meshlearn.executors: where heavy work (train, evaluate) runs; runtimes decide *when* it counts as done.

An executor takes a task (plain data with a `kind`) and returns a handle whose `result()` gives
the task's result; the protocol (``Executor``, ``Handle``) belongs to the node host
(``meshlearn.host``), which is all the simulator and the asyncio runtime know of executors. The
backends keep the same interface, so the runtimes never change:

* ``inline``      one task at a time in the caller's thread: the deterministic reference (``inline.py``);
* ``vectorized``  all pending train tasks of one architecture in one batched ``torch.vmap`` pass
                  (``vectorized.py``), equal to inline within float tolerance;
* ``process``     a stdlib spawn-context process pool, workspace shipped once per worker
                  (``pool.py``), bit-identical to inline;
* ``ray``         an actor pool on a (local or existing) Ray cluster, ``pip install meshlearn[ray]``
                  (``ray_executor.py``), bit-identical to inline.

``make_executor(name, workspace, **options)`` builds one by name from ``EXECUTORS``. The heavier
backends (torch, Ray) are imported only when built or named (``VectorizedExecutor``, ...).
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from meshlearn.executors.inline import InlineExecutor, Workspace
from meshlearn.host import Executor, Handle
from meshlearn.registry import Registry, check_params

__all__ = [
    "EXECUTORS",
    "Executor",
    "Handle",
    "InlineExecutor",
    "ProcessExecutor",
    "RayExecutor",
    "VectorizedExecutor",
    "Workspace",
    "make_executor",
]

_BACKENDS = {  # registered name -> (module, class): imported only when built or named
    "vectorized": ("meshlearn.executors.vectorized", "VectorizedExecutor"),
    "process": ("meshlearn.executors.pool", "ProcessExecutor"),
    "ray": ("meshlearn.executors.ray_executor", "RayExecutor"),
}


def _backend(name: str) -> type:
    module, cls = _BACKENDS[name]
    return getattr(importlib.import_module(module), cls)


def _lazy(name: str) -> Callable[..., Executor]:
    """A factory that imports the backend ``name`` when it builds one."""

    def build(workspace: Workspace, **options: Any) -> Executor:
        cls = _backend(name)
        check_params(cls, f"executor {name!r}", options, fixed=1)
        return cls(workspace, **options)

    return build


# name -> factory(workspace, **options) -> Executor
EXECUTORS: Registry[Callable[..., Executor]] = Registry("executors")
EXECUTORS.register("inline", InlineExecutor)
EXECUTORS.register("vectorized", _lazy("vectorized"))
EXECUTORS.register("process", _lazy("process"))
EXECUTORS.register("ray", _lazy("ray"))  # needs pip install "meshlearn[ray]"


def make_executor(name: str, workspace: Workspace, **options: Any) -> Executor:
    """Build the executor registered as ``name`` (inline, vectorized, process, ray) for ``workspace``.

    Unknown names raise RegistryError listing the valid ones; unknown options raise UsageError.
    """
    factory = EXECUTORS.get(name)
    if isinstance(factory, type):  # a class registered directly (the lazy backends check their own)
        check_params(factory, f"executor {name!r}", options, fixed=1)
    return factory(workspace, **options)


def __getattr__(attr: str) -> Any:
    for name, (_, cls) in _BACKENDS.items():
        if cls == attr:
            return _backend(name)
    raise AttributeError(f"module 'meshlearn.executors' has no attribute {attr!r}")
