"""What a swarm server asks its executor to do (torch-free): run a span of blocks, statelessly or as a step.

The tasks are plain data; the workspace that runs them (:class:`meshlearn.swarm.blocks.SpanWorkspace`) is
the one place where torch is touched, so swarm nodes stay sans-I/O and torch-free like every node.

* :class:`SpanTask` → :class:`SpanResult`: blocks ``[start, end)`` on a whole activation (``sw.run``).
* :class:`LoadSpan` → the digests of the blocks as held: make blocks ``[start, end)`` ready to run (a
  server taking a new span: the workspace loads them from the model file and drops the others; in the
  simulator it holds them all). The server announces those digests, computed from what it holds.
* :class:`StepTask` → :class:`StepResult`: one generation step of blocks ``[start, end)`` on the *new*
  positions only, with the caches of the earlier ones. **The caches travel with the task**: the server
  node keeps them (one :class:`CachedBlock` per (client, session, block)), hands them to the workspace
  with each step and stores the ones that come back. The workspace stays stateless, so one workspace can
  serve every simulated server, a process-pool worker needs no affinity to a session, and a crash (the
  node's memory) loses exactly the caches that a real crash loses. A cache holds numpy arrays (torch
  tensors share their memory on the way in and out), so handing it over costs no copy inline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["CachedBlock", "LoadSpan", "SpanResult", "SpanTask", "StepResult", "StepTask"]


@dataclass(frozen=True)
class LoadSpan:
    """Make blocks ``[start, end)`` ready to run, dropping the others (see the module docstring)."""

    start: int
    end: int
    kind: str = "swarm.load"

    def flops(self, workspace: Any) -> float:
        return 0.0


@dataclass(frozen=True, eq=False)
class SpanTask:
    """Run blocks ``[start, end)`` on ``x`` (the activation at boundary ``start``)."""

    start: int
    end: int
    x: np.ndarray
    kind: str = "swarm.span"

    def flops(self, workspace: Any) -> float:
        return float(workspace.span_flops(self.start, self.end, self.x))


@dataclass(frozen=True, eq=False)
class SpanResult:
    """The output activation, or why the input was refused (``problem``: a peer sent a bad activation)."""

    y: np.ndarray | None
    problem: str | None = None


@dataclass(frozen=True, eq=False)
class CachedBlock:
    """What one block remembers of ``length`` positions of ``batch`` sequences: ``states`` holds one
    entry per layer, plain data made by the workspace (an int, None, or a (keys, values) pair of arrays)."""

    length: int
    batch: int
    states: tuple[Any, ...]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for s in self.states if isinstance(s, tuple) for a in s)


@dataclass(frozen=True, eq=False)
class StepTask:
    """Run blocks ``[start, end)`` on the new positions ``x`` after those in ``caches`` (one per block,
    ``None``: start afresh, e.g. a replacement replaying the whole history)."""

    start: int
    end: int
    x: np.ndarray
    caches: tuple[CachedBlock | None, ...]
    kind: str = "swarm.step"

    def flops(self, workspace: Any) -> float:
        return float(workspace.step_flops(self.start, self.end, self.x))


@dataclass(frozen=True, eq=False)
class StepResult:
    """The output for the new positions and the blocks' new caches, or why the input was refused."""

    y: np.ndarray | None
    caches: tuple[CachedBlock, ...] = ()
    problem: str | None = None
