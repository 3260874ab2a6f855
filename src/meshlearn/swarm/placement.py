"""Which server hosts which blocks: placement rules as pure functions of a view (no I/O, no clock).

A model is cut into ``B`` blocks; each server hosts one contiguous span ``[start, start + L)`` of
``L = min(capacity, B)`` blocks (as in Petals: the span length is what fits in its memory) and
splits its compute rate over them, so it adds ``rate / L`` requests/s to each block it hosts. A
block's throughput is the sum over its hosts; the **bottleneck** (the swarm's throughput) is the
weakest block's. A placement is ``{server id: start}``.

Rules, one per arm of the issue-13 benchmark:

* ``repair`` (ours): every server computes the same plan from the same membership view, so no
  coordinator is needed and two joiners never pick the same blocks. The plan keeps every live
  server where it is, places joiners one at a time (in id order) on the weakest window, moves the
  least-needed servers onto blocks below the replica target, and then makes at most
  ``max_moves`` moves that raise the bottleneck by more than ``gain`` (hysteresis). With the view
  fixed, every move strictly raises the bottleneck, so it cannot oscillate.
* ``petals_best_start`` / ``petals_should_move``: Petals' rule (``block_selection.py``): a joiner
  takes the window whose sorted throughputs are lexicographically smallest; a server moves only
  if its simulation of everyone re-choosing lifts the swarm's throughput by more than
  ``1 / balance_quality`` (0.75).
* ``central``: full knowledge, no migration cost: many greedy starts refined by improving moves;
  the reference the others are measured against.
* ``static``: a hand-written assignment, servers laid end to end in id order, never changed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from meshlearn.errors import UsageError

__all__ = ["Server", "span_of", "block_throughput", "bottleneck", "replicas", "weakest_start", "repair",
           "petals_best_start", "petals_should_move", "central", "static", "moved"]


@dataclass(frozen=True)
class Server:
    """A server as others see it: compute ``rate`` (requests/s through one block) and ``capacity`` (blocks)."""

    id: str
    rate: float
    capacity: int
    site: str = "a"

    def span_len(self, blocks: int) -> int:
        return max(1, min(self.capacity, blocks))


def span_of(server: Server, start: int, blocks: int) -> range:
    return range(start, start + server.span_len(blocks))


def block_throughput(placement: dict[str, int], servers: dict[str, Server], blocks: int) -> np.ndarray:
    """Requests/s each block can serve: the sum of ``rate / L`` over its hosts."""
    out = np.zeros(blocks)
    for sid, start in placement.items():
        server = servers[sid]
        out[start:start + server.span_len(blocks)] += server.rate / server.span_len(blocks)
    return out


def replicas(placement: dict[str, int], servers: dict[str, Server], blocks: int) -> np.ndarray:
    out = np.zeros(blocks, dtype=int)
    for sid, start in placement.items():
        out[start:start + servers[sid].span_len(blocks)] += 1
    return out


def bottleneck(placement: dict[str, int], servers: dict[str, Server], blocks: int) -> float:
    return float(block_throughput(placement, servers, blocks).min()) if blocks else 0.0


def moved(before: dict[str, int], after: dict[str, int]) -> list[str]:
    """Servers present in both placements whose span changed (migrations)."""
    return sorted(s for s in after if s in before and before[s] != after[s])


def _starts(server: Server, blocks: int) -> range:
    return range(0, blocks - server.span_len(blocks) + 1)


def weakest_start(server: Server, throughput: np.ndarray, reps: np.ndarray, target: int) -> int:
    """The window to fill: most blocks below ``target`` replicas first, then the weakest throughput."""
    n = server.span_len(len(throughput))

    def need(start: int) -> tuple:
        window = slice(start, start + n)
        return (-int(np.sum(np.maximum(target - reps[window], 0))), float(throughput[window].min()),
                float(throughput[window].sum()), start)

    return min(_starts(server, len(throughput)), key=need)


# ----- ours: one deterministic plan per view ---------------------------------------------------

def repair(current: dict[str, int], servers: dict[str, Server], blocks: int, *, target: int = 2,
           max_moves: int = 1, gain: float = 1.1, recent: dict[str, set[int]] | None = None) -> dict[str, int]:
    """The placement every server computes from the same view (``current``: live servers' spans;
    ``servers``: every live server, joiners included; ``recent``: starts each server left lately,
    announced with its span, which improving moves never go back to). Deterministic; see the module
    docstring."""
    if blocks < 1 or target < 1:
        raise UsageError(f"blocks and target must be >= 1, got {blocks} and {target}")
    plan = {s: start for s, start in current.items() if s in servers}
    for sid in sorted((s for s in servers if s not in plan), key=_order):
        plan[sid] = _best_for(sid, plan, servers, blocks, target)
    _fill_deficits(plan, servers, blocks, target)
    for _ in range(max_moves):
        if not _improve(plan, servers, blocks, target, gain, recent or {}):
            break
    return plan


def _order(sid: str) -> str:
    """A stable order every server agrees on, not biased by naming (ids sorted by their hash)."""
    return hashlib.sha256(sid.encode()).hexdigest()


def _best_for(sid: str, plan: dict[str, int], servers: dict[str, Server], blocks: int, target: int) -> int:
    others = {s: v for s, v in plan.items() if s != sid}
    return weakest_start(servers[sid], block_throughput(others, servers, blocks),
                         replicas(others, servers, blocks), target)


def _fill_deficits(plan: dict[str, int], servers: dict[str, Server], blocks: int, target: int) -> None:
    """Move spare servers onto blocks below ``target`` replicas until none is, or nobody is spare."""
    for _ in range(len(plan)):
        reps = replicas(plan, servers, blocks)
        if reps.min() >= target:
            return
        mover = _spare(plan, servers, blocks, target, reps)
        if mover is None:
            return
        plan[mover] = _best_for(mover, plan, servers, blocks, target)


def _spare(plan, servers, blocks, target, reps) -> str | None:
    """The server whose span is most over-replicated (every block above target, more than needed)."""
    best, best_key = None, None
    for sid, start in plan.items():
        window = reps[start:start + servers[sid].span_len(blocks)]
        if window.min() <= target:
            continue
        key = (int(window.min()), _order(sid))
        if best_key is None or key > best_key:
            best, best_key = sid, key
    return best


def _improve(plan: dict[str, int], servers: dict[str, Server], blocks: int, target: int, gain: float,
             recent: dict[str, set[int]] | None = None) -> bool:
    """Make the single move that raises the bottleneck most, if it raises it by more than ``gain``
    (never back to a start the server left lately: that would be an oscillation)."""
    now = bottleneck(plan, servers, blocks)
    best, best_value = None, now * gain
    for sid in sorted(plan, key=_order):
        start = _best_for(sid, plan, servers, blocks, target)
        if start == plan[sid] or start in (recent or {}).get(sid, ()):
            continue
        trial = {**plan, sid: start}
        if replicas(trial, servers, blocks).min() < min(target, replicas(plan, servers, blocks).min()):
            continue
        value = bottleneck(trial, servers, blocks)
        if value > best_value:
            best, best_value = (sid, start), value
    if best is None:
        return False
    plan[best[0]] = best[1]
    return True


# ----- Petals --------------------------------------------------------------------------------

def petals_best_start(server: Server, throughput: np.ndarray) -> int:
    """Petals' ``choose_best_blocks``: the window whose sorted throughputs are smallest (lexicographically)."""
    n = server.span_len(len(throughput))
    return min(_starts(server, len(throughput)), key=lambda i: (sorted(throughput[i:i + n].tolist()), i))


def petals_should_move(sid: str, view: dict[str, int], servers: dict[str, Server], blocks: int, *,
                       balance_quality: float = 0.75, rounds: int = 10) -> int | None:
    """Petals' ``should_choose_other_blocks`` on this server's (possibly stale) view: simulate this
    server and then everyone re-choosing their best window; move (return the new start) only when
    the current swarm throughput is below ``balance_quality`` of the simulated one."""
    current = bottleneck(view, servers, blocks)
    trial = dict(view)
    for _ in range(rounds):
        changed = False
        for other in [sid, *sorted(s for s in trial if s != sid)]:
            rest = {s: v for s, v in trial.items() if s != other}
            start = petals_best_start(servers[other], block_throughput(rest, servers, blocks))
            changed |= start != trial.get(other)
            trial[other] = start
        if not changed:
            break
    new = bottleneck(trial, servers, blocks)
    if new > 0 and current / new < balance_quality and trial[sid] != view.get(sid):
        return trial[sid]
    return None


# ----- references ------------------------------------------------------------------------------

def central(servers: dict[str, Server], blocks: int, *, restarts: int = 8, seed: int = 0,
            max_rounds: int = 50) -> dict[str, int]:
    """Best placement found with full knowledge: greedy placements in several orders, each refined
    by moving one server at a time to its best window while that raises the bottleneck."""
    rng = np.random.default_rng(seed)
    ids = sorted(servers, key=lambda s: -servers[s].rate)
    best, best_value = {}, -1.0
    for attempt in range(restarts):
        order = ids if attempt == 0 else list(rng.permutation(ids))
        plan: dict[str, int] = {}
        for sid in order:
            plan[sid] = _best_for(sid, plan, servers, blocks, 1)
        for _ in range(max_rounds):
            if not _improve(plan, servers, blocks, 1, 1.0 + 1e-9):
                break
        value = bottleneck(plan, servers, blocks)
        if value > best_value:
            best, best_value = plan, value
    return best


def static(servers: dict[str, Server], blocks: int) -> dict[str, int]:
    """Hand-written: servers in id order laid end to end around the model, wrapping at the end."""
    plan, cursor = {}, 0
    for sid in sorted(servers):
        n = servers[sid].span_len(blocks)
        if cursor + n > blocks:
            cursor = 0
        plan[sid] = cursor
        cursor = (cursor + n) % blocks
    return plan
