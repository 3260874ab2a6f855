"""What a swarm member knows of the servers: their announcements, checked, versioned and expiring.

Every server announces, over and over, what it holds and how fast it runs it::

    {"server": "s3", "start": 4, "end": 8, "rate": 52.0, "site": "A", "seq": 17, "digests": ["9f2c…", …],
     "addr": "10.0.0.7:7300"}

A server that has not placed itself yet announces an empty span (``start == end``) with the
``capacity`` (blocks) it can hold: it is a **joiner**, not routable, but in every view, so all the
servers that compute a plan place the joiners together and never on the same blocks.

``seq`` grows with each announcement of that server (only its owner raises it), ``rate`` is the
throughput it measured (requests/s through its span), ``digests`` are the SHA-256 digests of the
blocks it holds (:meth:`meshlearn.swarm.blocks.BlockStack.digest`), ``addr`` where it listens (real
processes; empty in the simulator). A :class:`Directory` keeps the
newest announcement per server and is the view that placement (``placement.py``) and routing
(``routing.py``) take. It refuses, and counts by reason in ``rejected``:

* ``malformed``: a missing or mistyped field, a rate that is not a positive finite number;
* ``span``: a span outside the model's blocks, or not as long as its digests;
* ``digest``: a block whose digest is not the model's (a server announcing blocks it does not
  hold, or other weights; checked when the directory knows the model's digests);
* ``forged``: an announcement about server X sent directly by someone else (``src`` given);
* ``stale``: a ``seq`` older than the newest taken, sent by the server itself (a replay: an honest
  server never goes back).

Older or equal copies relayed by others are normal in gossip (a copy that took a longer way): they
are ignored (``offer`` says ``"stale"`` / ``"duplicate"``) but not counted as rejections.

An entry not refreshed by a newer ``seq`` within ``ttl_s`` expires (:meth:`expire`); a server that
the membership layer declares dead is dropped at once (:meth:`drop`). Pure state: time is an argument.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from meshlearn.errors import UsageError
from meshlearn.swarm.placement import Server

__all__ = ["Announcement", "Directory", "REJECTIONS"]

REJECTIONS = ("malformed", "span", "digest", "forged", "stale")


@dataclass(frozen=True)
class Announcement:
    """One server's claim: it holds blocks ``[start, end)`` (with ``digests``) and runs them at ``rate``."""

    server: str
    start: int
    end: int
    rate: float
    seq: int
    site: str = "A"
    digests: tuple[str, ...] = ()
    capacity: int = 0  # blocks it can hold (a joiner's only size); 0: its span's length
    addr: str = ""  # HOST:PORT it listens on (real processes)

    @property
    def placed(self) -> bool:
        return self.end > self.start

    def to_meta(self) -> dict[str, Any]:
        """Plain JSON for a message's meta."""
        return {"server": self.server, "start": self.start, "end": self.end, "rate": self.rate, "seq": self.seq,
                "site": self.site, "digests": list(self.digests), "capacity": self.capacity,
                "addr": self.addr}

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> Announcement | None:
        """The announcement in ``meta``, or None when a field is missing or of the wrong type."""
        try:
            fields = (meta["server"], meta["start"], meta["end"], meta["rate"], meta["seq"], meta.get("site", "A"))
            digests, capacity, addr = tuple(meta.get("digests", ())), meta.get("capacity", 0), meta.get("addr", "")
        except (KeyError, TypeError, AttributeError):
            return None
        server, start, end, rate, seq, site = fields
        if not (isinstance(server, str) and server and isinstance(site, str) and _ints(start, end, seq, capacity)
                and isinstance(rate, (int, float)) and not isinstance(rate, bool)
                and all(isinstance(d, str) for d in digests) and isinstance(addr, str) and len(addr) <= 255):
            return None
        return cls(server, start, end, float(rate), seq, site, digests, capacity, addr)

    def as_server(self) -> Server:
        """The placement/routing view: ``rate`` spread over the span's blocks, ``capacity`` its length."""
        size = self.end - self.start if self.placed else self.capacity
        return Server(self.server, self.rate * size, size, self.site)


def _ints(*values: Any) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) for v in values)


class Directory:
    """The newest valid announcement of each live server (see the module docstring)."""

    def __init__(self, blocks: int, *, digests: Sequence[str] | None = None, ttl_s: float = 3.0):
        if blocks < 1 or not ttl_s > 0:
            raise UsageError(f"a directory needs blocks >= 1 and ttl_s > 0, got {blocks} and {ttl_s}")
        if digests is not None and len(digests) != blocks:
            raise UsageError(f"digests must list one digest per block ({blocks}), got {len(digests)}")
        self.blocks, self.ttl_s = blocks, ttl_s
        self.digests = tuple(digests) if digests is not None else None
        self.entries: dict[str, Announcement] = {}
        self.seen_at: dict[str, float] = {}  # server -> when its newest seq arrived
        self.last_seq: dict[str, int] = {}  # newest seq ever taken per server, kept after a drop (no replays)
        self.rejected: Counter[str] = Counter()

    def offer(self, meta: Mapping[str, Any] | Announcement, now: float, *, src: str | None = None) -> str | None:
        """Take an announcement (a message's meta, or one already parsed); None when accepted, else
        the reason it was refused (also counted in ``rejected``). ``src``: the authenticated sender,
        when it came straight from the server (not relayed)."""
        ann = meta if isinstance(meta, Announcement) else Announcement.from_meta(meta)
        reason = self._problem(ann, src)
        if reason is not None:
            if reason != "duplicate" and (reason != "stale" or src is not None):
                self.rejected[reason] += 1
            return reason
        self.entries[ann.server], self.seen_at[ann.server] = ann, now
        self.last_seq[ann.server] = ann.seq
        return None

    def _problem(self, ann: Announcement | None, src: str | None) -> str | None:
        if ann is None or not (math.isfinite(ann.rate) and ann.rate > 0):
            return "malformed"
        if not self._span_ok(ann):
            return "span"
        if self.digests is not None and tuple(ann.digests) != self.digests[ann.start:ann.end]:
            return "digest"
        if src is not None and src != ann.server:
            return "forged"
        last = self.last_seq.get(ann.server, -1)
        return "stale" if ann.seq < last else "duplicate" if ann.seq == last else None

    def _span_ok(self, ann: Announcement) -> bool:
        if not ann.placed:  # a joiner: nothing held, a size that fits the model
            return ann.start == ann.end and 0 < ann.capacity <= self.blocks and not ann.digests
        return 0 <= ann.start < ann.end <= self.blocks and (not ann.digests or len(ann.digests) == ann.end - ann.start)

    def expire(self, now: float) -> list[str]:
        """Drop the servers not heard from (with a newer seq) for ``ttl_s``; returns them, sorted."""
        gone = sorted(s for s, t in self.seen_at.items() if now - t > self.ttl_s)
        for sid in gone:
            self.drop(sid)
        return gone

    def drop(self, server: str) -> None:
        """Forget ``server`` (declared dead by the membership layer, or expired). A later, newer
        announcement brings it back; a replay of an old one does not."""
        self.seen_at.pop(server, None)
        self.entries.pop(server, None)

    def placement(self) -> dict[str, int]:
        """``{server: start}`` of the placed servers, for :func:`meshlearn.swarm.routing.route` and the
        placement rules."""
        return {sid: ann.start for sid, ann in sorted(self.entries.items()) if ann.placed}

    def servers(self) -> dict[str, Server]:
        """The placed servers as routing sees them."""
        return {sid: ann.as_server() for sid, ann in sorted(self.entries.items()) if ann.placed}

    def joiners(self) -> dict[str, Server]:
        """Servers announced but not placed yet, with the size they can hold."""
        return {sid: ann.as_server() for sid, ann in sorted(self.entries.items()) if not ann.placed}

    def replicas(self) -> list[int]:
        """How many live servers hold each block."""
        out = [0] * self.blocks
        for ann in self.entries.values():
            for b in range(ann.start, ann.end):  # empty for joiners
                out[b] += 1
        return out

    def table(self, now: float) -> list[dict[str, Any]]:
        """One row per server (what ``swarm status`` prints): span, rate, site, age of its news."""
        return [{"server": sid, "blocks": f"{a.start}:{a.end}" if a.placed else "joining", "rate": round(a.rate, 2), "site": a.site,
                 "seq": a.seq, "age_s": round(now - self.seen_at[sid], 2)} for sid, a in sorted(self.entries.items())]
