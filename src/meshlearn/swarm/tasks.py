"""What a swarm server asks its executor to do: run a span of blocks on an activation (torch-free).

The task is plain data; the workspace that runs it (:class:`meshlearn.swarm.blocks.SpanWorkspace`) is
the one place where torch is touched, so swarm nodes stay sans-I/O and torch-free like every node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["SpanTask", "SpanResult"]


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
