"""The process-pool executor: tasks run in worker processes of a stdlib ``ProcessPoolExecutor``.

Workers are started with the ``spawn`` context (safe with torch's threads, the same on every OS)
and each receives the workspace exactly once, through the pool initializer; a workspace pickles
its data and model recipe without caches and rebuilds its model lazily in the worker. Tasks and
results are plain frozen dataclasses of numpy arrays, so only they cross the pipe per task.

Each worker limits torch to ``threads`` intra-op threads (default 1: N workers on N cores, no
oversubscription). A task is sent to the pool when submitted, so tasks run in parallel while the
simulator waits for virtual completion times; ``result()`` blocks until its task is done and
returns exactly what ``InlineExecutor`` returns (same code, same seed; bit-identical when the
inline side also uses one thread). A worker that dies makes the pending handles raise
``concurrent.futures.process.BrokenProcessPool``; ``close()`` shuts the pool down.

Spawned workers re-import the parent's ``__main__``: a script that builds this executor needs the
usual ``if __name__ == "__main__":`` guard (the ``meshlearn`` CLI and pytest have it).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
from typing import Any

from meshlearn.errors import UsageError
from meshlearn.executors.inline import Workspace
from meshlearn.host import Handle

__all__ = ["ProcessExecutor", "default_workers"]

_WORKSPACE: Any = None  # the worker process's workspace, set once by _init_worker


def default_workers() -> int:
    """CPUs this process may use (affinity-aware where the OS tells)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def _init_worker(workspace: Any, threads: int) -> None:
    global _WORKSPACE
    import torch

    torch.set_num_threads(threads)
    _WORKSPACE = workspace


def _run_task(task: Any) -> Any:
    return _WORKSPACE.run(task)


class _FutureHandle:
    __slots__ = ("_future",)

    def __init__(self, future: cf.Future):
        self._future = future

    def result(self) -> Any:
        return self._future.result()


class ProcessExecutor:
    """Runs tasks in ``workers`` spawned processes, each holding its own copy of ``workspace``."""

    def __init__(self, workspace: Workspace, workers: int | None = None, threads: int = 1):
        workers = default_workers() if workers is None else int(workers)
        if workers < 1 or threads < 1:
            raise UsageError(f"process executor needs workers >= 1 and threads >= 1, got {workers} and {threads}")
        self.workspace, self.workers, self.threads = workspace, workers, int(threads)
        self._pool: cf.ProcessPoolExecutor | None = cf.ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker, initargs=(workspace, self.threads))

    def submit(self, task: Any) -> Handle:
        if self._pool is None:
            raise UsageError("this process executor is closed; make a new one")
        return _FutureHandle(self._pool.submit(_run_task, task))

    def flops(self, task: Any) -> float:
        return float(task.flops(self.workspace))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> "ProcessExecutor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
