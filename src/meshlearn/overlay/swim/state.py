"""What a SWIM member remembers: its membership table, probe order, broadcast queue, probe, suspicions.

Memory is the constraint at 10,000 simulated members (each knows all the others), so:

* ``Roster`` interns node ids to small integer slots. Simulated members may share one roster:
  it is a symbol table, not knowledge — what a member knows lives only in its own table, where
  an unknown slot reads as state 0.
* ``MemberTable`` keeps one byte of state per slot (a ``bytearray``), incarnations in a sparse
  dict (most are 0) and change times only for suspect / dead members.
* ``ProbeOrder`` walks the members in a shuffled round-robin (SWIM §4.3) without storing the
  shuffled list: an affine permutation ``slot = (a·k + b) mod R`` with fresh random a, b per cycle.
* ``BroadcastQueue`` holds piggybacked updates (``Queued``), least-sent first; a newer update
  about a member replaces the queued one; each is dropped after the retransmit limit.
* ``Probe`` is the probe of the current protocol period, ``Suspicion`` one running Lifeguard
  suspicion (small slotted records: a member holds one probe and a few suspicions at a time).
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass

import numpy as np

from meshlearn.overlay.swim.packets import ALIVE, SUSPECT, USER, update_size

__all__ = ["Roster", "MemberTable", "ProbeOrder", "BroadcastQueue", "Queued", "Probe", "Suspicion", "UNKNOWN",
           "LIVE"]

UNKNOWN = 0
LIVE = (ALIVE, SUSPECT)  # members that are probed and counted in N


class Roster:
    """Interning table: node id <-> slot number (append-only)."""

    def __init__(self, ids: list[str] | None = None):
        self.ids: list[str] = []
        self.slots: dict[str, int] = {}
        self.id_bytes = array("H")  # encoded length of each id (Sync sizes without encoding)
        for node in ids or ():
            self.slot(node)

    def slot(self, node: str) -> int:
        slot = self.slots.get(node)
        if slot is None:
            slot = self.slots[node] = len(self.ids)
            self.ids.append(node)
            self.id_bytes.append(len(node.encode()))
        return slot

    def __len__(self) -> int:
        return len(self.ids)


class MemberTable:
    """One member's view: state, incarnation and change time of every member it knows."""

    def __init__(self, roster: Roster):
        self.roster = roster
        self.state = bytearray(len(roster))
        self.inc: dict[int, int] = {}
        self.changed: dict[int, float] = {}  # slot -> when it became suspect / dead
        self.live = 0  # members in state ALIVE or SUSPECT (self included)

    def warm(self, slots: list[int] | None) -> None:
        """Mark ``slots`` (None: the whole roster) alive at incarnation 0, in bulk (a warm start)."""
        if len(self.state) < len(self.roster):
            self.state.extend(bytes(len(self.roster) - len(self.state)))
        if slots is None:
            self.state[:] = bytes([ALIVE]) * len(self.state)
        else:
            for slot in slots:
                self.state[slot] = ALIVE
        self.live = self.state.count(ALIVE) + self.state.count(SUSPECT)

    def get(self, slot: int) -> int:
        state = self.state
        return state[slot] if slot < len(state) else UNKNOWN

    def set(self, slot: int, new: int, inc: int, now: float) -> int:
        """Set a member's state and incarnation; returns the previous state."""
        if slot >= len(self.state):
            self.state.extend(bytes(len(self.roster) - len(self.state)))
        old = self.state[slot]
        self.state[slot] = new
        self.live += (new in LIVE) - (old in LIVE)
        if inc:
            self.inc[slot] = inc
        else:
            self.inc.pop(slot, None)
        if new == ALIVE:
            self.changed.pop(slot, None)
        elif new != old:
            self.changed[slot] = now
        return old

    def incarnation(self, slot: int) -> int:
        return self.inc.get(slot, 0)

    def slots_in(self, *states: int) -> list[int]:
        """Slots whose state is one of ``states`` (a scan: for rare paths only)."""
        return [s for s, v in enumerate(self.state) if v in states]

    def differences(self, states: bytes, incs: dict[int, int]) -> list[int]:
        """Slots where a snapshot (same roster) knows a member in another state or incarnation."""
        mine = np.frombuffer(bytes(self.state), dtype=np.uint8)
        theirs = np.frombuffer(states, dtype=np.uint8)
        n = min(len(mine), len(theirs))
        slots = set(np.flatnonzero((mine[:n] != theirs[:n]) & (theirs[:n] != 0)).tolist())
        slots.update(int(s) + n for s in np.flatnonzero(theirs[n:]))
        for slot in incs.keys() | self.inc.keys():
            if slot < len(theirs) and theirs[slot] and incs.get(slot, 0) != self.inc.get(slot, 0):
                slots.add(slot)
        return sorted(slots)

    def random_member(self, rng: np.random.Generator, exclude: tuple[int, ...], states=LIVE) -> int | None:
        """A uniformly random member in ``states`` not in ``exclude``; None if there is none."""
        size, state = len(self.state), self.state
        for _ in range(32):  # rejection sampling: cheap when most slots qualify
            slot = int(rng.random() * size)
            if state[slot] in states and slot not in exclude:
                return slot
        pool = [s for s, v in enumerate(state) if v in states and s not in exclude]
        return pool[int(rng.random() * len(pool))] if pool else None


class ProbeOrder:
    """Shuffled round-robin over the slots of a growing table, O(1) memory."""

    def __init__(self) -> None:
        self.size = 0
        self.k = 0
        self.a = self.b = 1

    def next(self, table: MemberTable, me: int, rng: np.random.Generator) -> int | None:
        """The next live member to probe (a new shuffle starts after each full pass)."""
        state = table.state
        for _ in range(2):
            while self.k < self.size:
                slot = (self.a * self.k + self.b) % self.size
                self.k += 1
                if slot != me and slot < len(state) and state[slot] in LIVE:
                    return slot
            self._reshuffle(len(state), rng)
        return None

    def _reshuffle(self, size: int, rng: np.random.Generator) -> None:
        self.size, self.k = size, 0
        if size <= 1:
            self.a, self.b = 1, 0
            return
        self.b = int(rng.random() * size)
        self.a = 1 + int(rng.random() * (size - 1))
        while math.gcd(self.a, size) != 1:
            self.a = self.a % (size - 1) + 1


@dataclass(slots=True)
class Probe:
    """The probe of this protocol period: its ping's ``seq``, the target's ``slot``, what came back."""

    seq: int
    slot: int
    acked: bool = False
    nacks_expected: int = 0  # one per PingReq sent (each helper answers Ack or Nack)
    nacks: int = 0


@dataclass(slots=True)
class Suspicion:
    """A running suspicion of one member: its timer falls as independent ``confirmers`` add up."""

    start: float  # when it began
    incarnation: int  # the suspected incarnation (the DEAD it times out into carries it)
    confirmers: set[str]  # members that suspected it, the first included
    members: int  # N when it began: the timeout bounds depend on it


@dataclass(slots=True)
class Queued:
    """An update waiting in the broadcast queue."""

    transmits: int
    rank: int  # minus the push order: newer updates first among equal transmits
    update: tuple
    size: int  # encoded bytes (``update_size``)


class BroadcastQueue:
    """Updates waiting to be piggybacked: fewest transmissions first, newest first among equals."""

    def __init__(self) -> None:
        self.items: dict[object, Queued] = {}  # key: the member, or (origin, seq) of a user message
        self._order = 0

    def __len__(self) -> int:
        return len(self.items)

    def push(self, update: tuple) -> None:
        """Queue ``update``; it replaces a queued update about the same member (or user message)."""
        self._order += 1
        key = (update[1], update[2]) if update[0] == USER else update[1]
        self.items[key] = Queued(0, -self._order, update, update_size(update))

    def take(self, member_budget: int, user_budget: int, limit: int, first: tuple | None = None) -> tuple:
        """Updates for one packet; each counts one transmit and leaves after ``limit`` of them.

        User broadcasts get ``user_budget`` bytes first (room membership traffic cannot take,
        memberlist#299); membership updates get ``member_budget`` plus what users left over.
        ``first`` (e.g. the suspicion a probe carries to its target) is forced in front.
        """
        if not self.items:
            return () if first is None else (first,)
        chosen, used = ([first], update_size(first)) if first is not None else ([], 0)
        ranked = sorted(self.items.items(), key=_rank)
        user_used = self._fill(ranked, True, user_budget, limit, chosen)
        self._fill(ranked, False, member_budget + user_budget - user_used - used, limit, chosen)
        return tuple(chosen)

    def _fill(self, ranked: list, users: bool, budget: int, limit: int, chosen: list) -> int:
        used = 0
        for key, item in ranked:
            if (item.update[0] == USER) != users or used + item.size > budget:
                continue
            chosen.append(item.update)
            used += item.size
            item.transmits += 1
            if item.transmits >= limit:
                del self.items[key]
        return used


def _rank(entry: tuple[object, Queued]) -> tuple[int, int]:
    return entry[1].transmits, entry[1].rank

