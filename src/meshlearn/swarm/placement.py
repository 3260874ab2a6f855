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
  fixed, every move strictly raises the bottleneck, so it cannot oscillate. It scales to 10,000
  servers: per-block throughput and replicas are tallied once (vectorized) and updated per move in
  O(span); throughput is counted in integer units (``UNIT``), so sums are exact and the plan depends
  on the view's contents only, never on the order a server happens to hold it in; ``movers`` bounds
  the improving-move search to the servers on the most over-provisioned spans (None: all servers,
  which gave the same plans as the original O(n²) search on every view compared, and
  bench_placement.py figures unchanged).
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
    """How many servers host each block (vectorized: 10,000 servers in about a millisecond)."""
    starts = np.fromiter(placement.values(), dtype=np.int64, count=len(placement))
    caps = np.fromiter((servers[s].capacity for s in placement), dtype=np.int64, count=len(placement))
    diff = np.zeros(blocks + 1, dtype=int)
    np.add.at(diff, starts, 1)
    np.add.at(diff, starts + np.clip(caps, 1, blocks), -1)
    return np.cumsum(diff[:-1])


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

UNIT = 2 ** 32  # throughput is tallied in integer 2**-32 requests/s: sums are exact and order-free
_LIMIT = 2 ** 62  # int64 headroom: a window sum of the swarm's whole rate must stay below it


def repair(current: dict[str, int], servers: dict[str, Server], blocks: int, *, target: int = 2,
           max_moves: int = 1, gain: float = 1.1, recent: dict[str, set[int]] | None = None,
           movers: int | None = None) -> dict[str, int]:
    """The placement every server computes from the same view (``current``: live servers' spans;
    ``servers``: every live server, joiners included; ``recent``: starts each server left lately,
    announced with its span, which improving moves never go back to). Deterministic; see the module
    docstring. ``movers``: how many servers an improving move is searched among (the ones on the
    most over-provisioned spans); None: all of them. Cost per call: O(n) array work plus
    O(movers x blocks) per move, so 10,000 servers re-plan in milliseconds."""
    if blocks < 1 or target < 1:
        raise UsageError(f"blocks and target must be >= 1, got {blocks} and {target}")
    if movers is not None and movers < 1:
        raise UsageError(f"movers must be >= 1 (or None: every server), got {movers}")
    plan = {s: start for s, start in current.items() if s in servers}
    tally = _Tally(plan, servers, blocks)
    for sid in sorted((s for s in servers if s not in plan), key=_order):
        tally.place(plan, sid, tally.best_for(sid, None, target))
    _fill_deficits(plan, tally, target)
    for _ in range(max_moves):
        if not _improve(plan, tally, target, gain, recent or {}, movers):
            break
    return plan


def _order(sid: str) -> str:
    """A stable order every server agrees on, not biased by naming (ids sorted by their hash)."""
    key = _ORDER.get(sid)
    if key is None:
        key = _ORDER[sid] = hashlib.sha256(sid.encode()).hexdigest()
    return key


_ORDER: dict[str, str] = {}  # id -> its hash: ids are hashed once per process, not once per plan


class _Tally:
    """A plan's throughput (integer units of ``UNIT``) and replicas per block, kept incrementally:
    moving one server costs O(its span), not a recount over every server."""

    def __init__(self, plan: dict[str, int], servers: dict[str, Server], blocks: int):
        self.servers, self.blocks = servers, blocks
        self.tp = np.zeros(blocks, dtype=np.int64)
        self.reps = np.zeros(blocks, dtype=np.int64)
        if sum(s.rate for s in servers.values()) * UNIT * blocks >= _LIMIT:
            raise UsageError(f"the servers' total rate is too large to tally (keep rate x blocks below "
                             f"{_LIMIT // UNIT:.3g} requests/s)")
        if plan:
            self._count(plan)

    def _count(self, plan: dict[str, int]) -> None:
        """Every server of ``plan`` at once, as difference arrays (vectorized)."""
        starts = np.fromiter(plan.values(), dtype=np.int64, count=len(plan))
        lens, shares = self.lens_shares(plan)
        for out, add in ((self.tp, shares), (self.reps, np.ones_like(shares))):
            diff = np.zeros(self.blocks + 1, dtype=np.int64)
            np.add.at(diff, starts, add)
            np.add.at(diff, starts + lens, -add)
            out += np.cumsum(diff[:-1])

    def lens_shares(self, ids) -> tuple[np.ndarray, np.ndarray]:
        """:func:`_share` of every server in ``ids``, vectorized (the same float ops and rounding)."""
        chosen = [self.servers[s] for s in ids]
        caps = np.fromiter((s.capacity for s in chosen), dtype=np.int64, count=len(chosen))
        rates = np.fromiter((s.rate for s in chosen), dtype=np.float64, count=len(chosen))
        lens = np.clip(caps, 1, self.blocks)
        return lens, np.rint(rates / lens * UNIT).astype(np.int64)

    def add(self, sid: str, start: int, sign: int = 1) -> None:
        n, share = _share(self.servers[sid], self.blocks)
        self.tp[start:start + n] += sign * share
        self.reps[start:start + n] += sign

    def place(self, plan: dict[str, int], sid: str, start: int) -> None:
        """Put ``sid`` at ``start`` in ``plan`` (moving it if it was elsewhere)."""
        if sid in plan:
            self.add(sid, plan[sid], -1)
        plan[sid] = start
        self.add(sid, start)

    def without(self, sid: str, start: int | None) -> tuple[np.ndarray, np.ndarray]:
        tp, reps = self.tp.copy(), self.reps.copy()
        if start is not None:
            n, share = _share(self.servers[sid], self.blocks)
            tp[start:start + n] -= share
            reps[start:start + n] -= 1
        return tp, reps

    def best_for(self, sid: str, start: int | None, target: int) -> int:
        """``sid``'s weakest window with everyone else where they are (``start``: where it is now)."""
        tp, reps = self.without(sid, start)
        return _weakest(self.servers[sid].span_len(self.blocks), tp, reps, target)


def _share(server: Server, blocks: int) -> tuple[int, int]:
    """(span length, the server's throughput per block in ``UNIT`` s)."""
    n = server.span_len(blocks)
    return n, round(server.rate / n * UNIT)


def _weakest(n: int, tp: np.ndarray, reps: np.ndarray, target: int) -> int:
    """:func:`weakest_start`, vectorized over the windows: most blocks below target, weakest, lightest, first."""
    missing = np.maximum(target - reps, 0)
    deficit = _window_sums(missing, n)
    low = np.lib.stride_tricks.sliding_window_view(tp, n).min(axis=1)
    starts = np.arange(len(low))
    return int(starts[np.lexsort((starts, _window_sums(tp, n), low, -deficit))[0]])


def _window_sums(values: np.ndarray, n: int) -> np.ndarray:
    c = np.concatenate(([0], np.cumsum(values)))
    return c[n:] - c[:-n]


def _fill_deficits(plan: dict[str, int], tally: _Tally, target: int) -> None:
    """Move spare servers onto blocks below ``target`` replicas until none is, or nobody is spare."""
    for _ in range(len(plan)):
        if tally.reps.min() >= target:
            return
        mover = _spare(plan, tally, target)
        if mover is None:
            return
        tally.place(plan, mover, tally.best_for(mover, plan[mover], target))


def _window_mins(plan: dict[str, int], tally: _Tally, values: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Each planned server's minimum of ``values`` over its span (vectorized per span length)."""
    ids = list(plan)
    starts = np.fromiter(plan.values(), dtype=np.int64, count=len(ids))
    lens, _ = tally.lens_shares(ids)
    out = np.empty(len(ids), dtype=values.dtype)
    for n in np.unique(lens):
        pick = lens == n
        out[pick] = np.lib.stride_tricks.sliding_window_view(values, int(n)).min(axis=1)[starts[pick]]
    return ids, out


def _spare(plan: dict[str, int], tally: _Tally, target: int) -> str | None:
    """The server whose span is most over-replicated (every block above target, more than needed)."""
    ids, low = _window_mins(plan, tally, tally.reps)
    if not len(ids) or low.max() <= target:
        return None
    return max((ids[i] for i in np.flatnonzero(low == low.max())), key=_order)


def _candidates(plan: dict[str, int], tally: _Tally, movers: int | None) -> list[str]:
    """Who an improving move is searched among, in hash order: everyone, or the ``movers`` servers
    whose spans keep the most throughput without them (the most over-provisioned; ties by hash)."""
    if movers is None or movers >= len(plan):
        return sorted(plan, key=_order)
    ids, low = _window_mins(plan, tally, tally.tp)
    slack = low - tally.lens_shares(ids)[1]
    cut = np.sort(slack)[-movers]
    above = [ids[i] for i in np.flatnonzero(slack > cut)]
    tied = sorted((ids[i] for i in np.flatnonzero(slack == cut)), key=_order)
    return sorted(above + tied[:movers - len(above)], key=_order)


def _improve(plan: dict[str, int], tally: _Tally, target: int, gain: float,
             recent: dict[str, set[int]], movers: int | None = None) -> bool:
    """Make the single move that raises the bottleneck most, if it raises it by more than ``gain``
    (never back to a start the server left lately: that would be an oscillation)."""
    best, best_value = None, float(tally.tp.min()) * gain
    floor = min(target, int(tally.reps.min()))
    for sid in _candidates(plan, tally, movers):
        value, start = _trial(sid, plan[sid], tally, target, recent.get(sid, ()), floor)
        if value is not None and value > best_value:
            best, best_value = (sid, start), value
    if best is None:
        return False
    tally.place(plan, *best)
    return True


def _trial(sid: str, old: int, tally: _Tally, target: int, banned, floor: int) -> tuple[float | None, int]:
    """The bottleneck if ``sid`` moved from ``old`` to its best window (None: no such move is allowed)."""
    tp, reps = tally.without(sid, old)
    n, share = _share(tally.servers[sid], tally.blocks)
    start = _weakest(n, tp, reps, target)
    if start == old or start in banned:
        return None, start
    tp[start:start + n] += share
    reps[start:start + n] += 1
    if reps.min() < floor:
        return None, start
    return float(tp.min()), start


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
        tally = _Tally(plan, servers, blocks)
        for sid in order:
            tally.place(plan, sid, tally.best_for(sid, None, 1))
        for _ in range(max_rounds):
            if not _improve(plan, tally, 1, 1.0 + 1e-9, {}):
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
