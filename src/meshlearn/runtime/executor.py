"""Executors decide *where* heavy work (train, evaluate) runs; runtimes decide *when* it counts as done.

An executor takes a task (plain data with a `kind`) and returns a handle whose `result()` gives
the task's result. The inline executor runs the task on first `result()` call, in the caller's
thread; the others keep the same interface so the simulator and the asyncio runtime never change:

* ``inline``      one task at a time in the caller's thread: the deterministic reference;
* ``vectorized``  all pending train tasks of one architecture in one batched ``torch.vmap`` pass
                  (``meshlearn.runtime.vectorized``), equal to inline within float tolerance;
* ``process``     a stdlib spawn-context process pool, workspace shipped once per worker
                  (``meshlearn.runtime.pool``), bit-identical to inline;
* ``ray``         an actor pool on a (local or existing) Ray cluster, ``pip install meshlearn[ray]``
                  (``meshlearn.runtime.ray_executor``), bit-identical to inline.

``make_executor(name, workspace, **options)`` builds one by name from ``EXECUTORS``.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from meshlearn.data._plugins import check_params
from meshlearn.registry import Registry

__all__ = ["EXECUTORS", "Executor", "Handle", "InlineExecutor", "Workspace", "make_executor"]


class Workspace(Protocol):
    """What tasks run against: datasets, partitions, model factory (see meshlearn.learn)."""

    def run(self, task: Any) -> Any: ...


class Handle(Protocol):
    def result(self) -> Any: ...


class Executor(Protocol):
    def submit(self, task: Any) -> Handle: ...

    def flops(self, task: Any) -> float:
        """Modelled FLOPs of `task`; the simulator turns them into virtual time per device."""
        ...

    def close(self) -> None: ...


class _Deferred:
    """Runs the task the first time its result is asked for, then remembers it."""

    __slots__ = ("_workspace", "_task", "_done", "_value")

    def __init__(self, workspace: Workspace, task: Any):
        self._workspace, self._task = workspace, task
        self._done, self._value = False, None

    def result(self) -> Any:
        if not self._done:
            self._value = self._workspace.run(self._task)
            self._done, self._workspace, self._task = True, None, None
        return self._value


class InlineExecutor:
    """Runs each task in the calling thread, one at a time: the deterministic reference."""

    def __init__(self, workspace: Workspace):
        self.workspace = workspace

    def submit(self, task: Any) -> Handle:
        return _Deferred(self.workspace, task)

    def flops(self, task: Any) -> float:
        return float(task.flops(self.workspace))

    def close(self) -> None:
        pass


# name -> factory(workspace, **options) -> Executor. The heavier backends live in their own modules and
# are imported only when asked for (Ray is an optional extra).
EXECUTORS: Registry[Callable[..., Executor]] = Registry("executors")
EXECUTORS.register("inline", InlineExecutor)


@EXECUTORS.register("vectorized")
def _vectorized(workspace: Workspace, **options: Any) -> Executor:
    """Batched training of many same-architecture clients (see meshlearn.runtime.vectorized)."""
    from meshlearn.runtime.vectorized import VectorizedExecutor

    check_params(VectorizedExecutor, "executor 'vectorized'", options, fixed=1)
    return VectorizedExecutor(workspace, **options)


@EXECUTORS.register("process")
def _process(workspace: Workspace, **options: Any) -> Executor:
    """A spawn-context process pool (see meshlearn.runtime.pool)."""
    from meshlearn.runtime.pool import ProcessExecutor

    check_params(ProcessExecutor, "executor 'process'", options, fixed=1)
    return ProcessExecutor(workspace, **options)


@EXECUTORS.register("ray")
def _ray(workspace: Workspace, **options: Any) -> Executor:
    """A Ray actor pool (see meshlearn.runtime.ray_executor); needs ``pip install meshlearn[ray]``."""
    from meshlearn.runtime.ray_executor import RayExecutor

    check_params(RayExecutor, "executor 'ray'", options, fixed=1)
    return RayExecutor(workspace, **options)


def make_executor(name: str, workspace: Workspace, **options: Any) -> Executor:
    """Build the executor registered as ``name`` (inline, vectorized, process, ray) for ``workspace``.

    Unknown names raise RegistryError listing the valid ones; unknown options raise UsageError.
    """
    factory = EXECUTORS.get(name)
    if factory is InlineExecutor:
        check_params(InlineExecutor, "executor 'inline'", options, fixed=1)
    return factory(workspace, **options)
