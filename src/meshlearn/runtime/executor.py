"""Executors decide *where* heavy work (train, evaluate) runs; runtimes decide *when* it counts as done.

An executor takes a task (plain data with a `kind`) and returns a handle whose `result()` gives
the task's result. The inline executor runs the task on first `result()` call, in the caller's
thread; later executors (vectorized, process pool, Ray) keep the same interface so the simulator
and the asyncio runtime never change.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["Executor", "Handle", "InlineExecutor", "Workspace"]


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
