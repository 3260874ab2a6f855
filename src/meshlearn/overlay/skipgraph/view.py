"""The converged shape of a Skip Graph, computed directly, and the membership-vector helpers.

``bootstrap_skipgraph`` gives every member the neighbours the protocol converges to: level-i lists
are the members sharing the first i bits of their membership vector, sorted by key, up to the
first level where a member is alone; the leaf lists are the nearest members at level 0. Large
simulations start from it; the tests check that protocol joins and repairs arrive at it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from meshlearn.errors import UsageError
from meshlearn.overlay.skipgraph.packets import Peer

__all__ = ["MVEC_BITS", "SkipGraphView", "between", "bootstrap_skipgraph", "prefix_len", "random_mvecs"]

MVEC_BITS = 64


def prefix_len(a: int, b: int) -> int:
    """Number of leading bits two membership vectors share (64 when equal)."""
    return MVEC_BITS - (a ^ b).bit_length()


def random_mvecs(n: int, rng: np.random.Generator) -> list[int]:
    """``n`` random 64-bit membership vectors."""
    return [int(v) for v in rng.integers(0, 2**64, size=n, dtype=np.uint64)]


# ----- the converged structure ----------------------------------------------------------------
@dataclass(frozen=True)
class SkipGraphView:
    """Neighbour keys of every member, level by level, as the protocol converges to them."""

    peers: dict[int, Peer]
    mvecs: dict[int, int]
    left: dict[int, tuple]  # key -> left neighbour key (or None) per level, up to the first lonely level
    right: dict[int, tuple]
    lefts: dict[int, tuple]  # key -> level-0 leaf list on the left, nearest first
    rights: dict[int, tuple]

    def levels(self, key: int) -> int:
        """Levels of ``key``'s lists (its top, lonely level included)."""
        return len(self.left[key])


def bootstrap_skipgraph(members: Iterable[tuple[Peer, int]], *, leaf_size: int = 4) -> SkipGraphView:
    """The structure ``members`` (peer, membership vector) converge to, computed level by level."""
    peers, mvecs = {}, {}
    for peer, mvec in members:
        if peer.key in peers:
            raise UsageError(f"skip graph key {peer.key} is used twice; keys must be unique")
        peers[peer.key], mvecs[peer.key] = peer, mvec
    order = sorted(peers)
    left: dict[int, list] = {k: [] for k in order}
    right: dict[int, list] = {k: [] for k in order}
    groups = [order]
    for level in range(MVEC_BITS + 1):
        nxt = []
        for group in groups:
            for sub in _split(group, mvecs, level):
                _link_list(sub, left, right)
                if len(sub) > 1 and level < MVEC_BITS:
                    nxt.append(sub)
        groups = nxt
        if not groups:
            break
    lefts = {k: tuple(order[max(0, i - leaf_size):i][::-1]) for i, k in enumerate(order)}
    rights = {k: tuple(order[i + 1:i + 1 + leaf_size]) for i, k in enumerate(order)}
    return SkipGraphView(peers, mvecs, {k: tuple(v) for k, v in left.items()},
                         {k: tuple(v) for k, v in right.items()}, lefts, rights)


def between(a: int, b: int, c: int) -> bool:
    """True when key ``b`` lies strictly between ``a`` and ``c`` (either order)."""
    return a < b < c or c < b < a


def _split(group: list[int], mvecs: dict[int, int], level: int) -> list[list[int]]:
    """``group`` (sorted) split by ``level``-bit prefix; each part stays sorted."""
    if level == 0:
        return [group]
    shift = MVEC_BITS - level
    parts: dict[int, list[int]] = defaultdict(list)
    for k in group:
        parts[mvecs[k] >> shift].append(k)
    return list(parts.values())


def _link_list(keys: list[int], left: dict, right: dict) -> None:
    last = len(keys) - 1
    for i, k in enumerate(keys):
        left[k].append(keys[i - 1] if i > 0 else None)
        right[k].append(keys[i + 1] if i < last else None)
