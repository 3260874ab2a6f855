"""The Ray executor: tasks run on a pool of Ray actors, each holding one copy of the workspace.

Optional: ``pip install "meshlearn[ray]"`` (Ray is ~80 MB to download, ~240 MB installed, and takes
a few seconds to start, so it is never imported unless this executor is built). Clients are data,
not actors (the Flower pattern): a handful of actors, sized from the cluster's CPUs, run every
client's tasks. The workspace is put into Ray's object store once and handed to every actor.

If Ray is not initialised yet, the executor starts a local one-machine cluster with
``ray.init(num_cpus=..., include_dashboard=False)`` and shuts it down on ``close()``; to use an
existing cluster, call ``ray.init(address=...)`` first and it is left running. Ray >= 2.52 turns on
token authentication by default and writes a token under ``~/.ray``; set ``RAY_AUTH_MODE=disabled``
in the environment for throw-away local clusters (tests and CI do).

Tasks go to the actors round-robin when submitted; ``result()`` waits for that task. Results are
bit-identical to ``InlineExecutor`` with one torch thread (same code, same seed); each actor limits
torch to ``threads`` intra-op threads (default 1).
"""

from __future__ import annotations

import itertools
from typing import Any

from meshlearn.errors import UsageError
from meshlearn.executors.inline import Workspace
from meshlearn.host import Handle

__all__ = ["RayExecutor", "import_ray", "INSTALL_HINT"]

INSTALL_HINT = 'the ray executor needs Ray: pip install "meshlearn[ray]" (or pip install "ray>=2.40")'


def import_ray() -> Any:
    """Import Ray or raise UsageError with the install hint."""
    try:
        import ray
    except ImportError as exc:
        raise UsageError(f"{INSTALL_HINT} ({exc})") from None
    return ray


class _WorkspaceActor:
    """Body of each actor: one workspace, tasks run one at a time."""

    def __init__(self, workspace: Any, threads: int):
        import torch

        torch.set_num_threads(threads)
        self.workspace = workspace

    def run(self, task: Any) -> Any:
        return self.workspace.run(task)

    def ready(self) -> bool:
        return True


class _RayHandle:
    __slots__ = ("_ray", "_ref", "_done", "_value")

    def __init__(self, ray: Any, ref: Any):
        self._ray, self._ref, self._done, self._value = ray, ref, False, None

    def result(self) -> Any:
        if not self._done:
            try:
                value = self._ray.get(self._ref)
            except self._ray.exceptions.RayTaskError as exc:  # re-raise the task's own error (e.g. ProtocolError)
                cause = exc.as_instanceof_cause()
                raise (exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else cause) from None
            self._value, self._done, self._ref = value, True, None
        return self._value


class RayExecutor:
    """Runs tasks on ``actors`` Ray actors (default: one per CPU of the cluster).

    ``num_cpus`` is only used when this executor starts Ray itself (default: all local CPUs);
    ``init_options`` are passed on to ``ray.init`` then (e.g. ``{"object_store_memory": 2**30}``).
    """

    def __init__(self, workspace: Workspace, actors: int | None = None, num_cpus: int | None = None,
                 threads: int = 1, init_options: dict[str, Any] | None = None):
        ray = import_ray()
        if (actors is not None and actors < 1) or (num_cpus is not None and num_cpus < 1) or threads < 1:
            raise UsageError(f"ray executor needs actors, num_cpus, threads >= 1, got {actors}, {num_cpus}, {threads}")
        self.workspace, self.threads = workspace, int(threads)
        self._ray = ray
        self._owns_ray = False
        if not ray.is_initialized():
            options = {"include_dashboard": False, "logging_level": "WARNING", "log_to_driver": False}
            options.update(init_options or {})
            if num_cpus is not None:
                options["num_cpus"] = int(num_cpus)
            elif "address" not in options:  # a cluster of our own: as many CPUs as a process pool would use
                from meshlearn.executors.pool import default_workers

                options.setdefault("num_cpus", default_workers())
            _init(ray, options)
            self._owns_ray = True
        if actors is None:
            actors = max(1, int(ray.cluster_resources().get("CPU", 1)))
        remote_cls = ray.remote(num_cpus=1)(_WorkspaceActor)
        ws_ref = ray.put(workspace)
        self.actors = [remote_cls.remote(ws_ref, self.threads) for _ in range(int(actors))]
        ray.get([a.ready.remote() for a in self.actors])  # surface start-up errors here, not in a task
        self._next = itertools.cycle(self.actors)

    def submit(self, task: Any) -> Handle:
        if self._next is None:
            raise UsageError("this ray executor is closed; make a new one")
        return _RayHandle(self._ray, next(self._next).run.remote(task))

    def flops(self, task: Any) -> float:
        return float(task.flops(self.workspace))

    def close(self) -> None:
        if self._next is None:
            return
        self._next = None
        for actor in self.actors:
            self._ray.kill(actor)
        self.actors = []
        if self._owns_ray and self._ray.is_initialized():
            self._ray.shutdown()

    def __enter__(self) -> "RayExecutor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _init(ray: Any, options: dict[str, Any]) -> None:
    """``ray.init(**options)``; a cluster that cannot be reached or bad options are one UsageError line."""
    try:
        ray.init(**options)
    except (ConnectionError, TimeoutError, ValueError, TypeError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"executor ray: cannot start or reach Ray with {options} ({first}); check "
                         "runtime.executor_options (e.g. its init_options.address)") from None

