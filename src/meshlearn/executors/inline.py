"""The inline executor: each task runs in the caller's thread on its first ``result()``.

It is the deterministic reference every other backend is checked against (``meshlearn.executors``).
"""

from __future__ import annotations

from typing import Any, Protocol

from meshlearn.host import Handle

__all__ = ["InlineExecutor", "Workspace"]


class Workspace(Protocol):
    """What tasks run against: datasets, partitions, model factory (see meshlearn.learn)."""

    def run(self, task: Any) -> Any: ...


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
