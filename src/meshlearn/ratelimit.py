"""Rate limits for things a flood could multiply: log lines about rejected input, replies to senders.

Sans-I/O like the nodes: the caller passes ``now`` (seconds on any clock that does not go back),
so the same limiter works on the simulator's virtual time and on a real runtime's clock.

``RateLimit(burst, period_s).admit(key, now)`` decides per key (a counter name, a sender id):

* the first ``burst`` events are admitted one by one;
* after that, events are dropped (the caller still counts them) and at most one is admitted per
  ``period_s``, as a summary: ``admit`` returns how many were dropped since the last admitted one
  and over how many seconds, for a line such as ``... (and 512 more in the last 10 s)``;
* a key quiet for a whole ``period_s`` with nothing dropped gets a fresh burst.

With ``burst=1`` that is "at most one per key per ``period_s``". The key table is bounded
(``max_keys``): keys quiet for a period are forgotten when it fills, and while it is full of busy
keys every new key shares one overflow key, so a sender that invents keys cannot grow memory or
output without bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Hashable, NamedTuple

from meshlearn.errors import UsageError

__all__ = ["RateLimit", "Admitted"]

_OVERFLOW = object()  # the shared key of events whose own key found the table full


class Admitted(NamedTuple):
    """An admitted event: ``dropped`` events of its key were dropped in the ``span_s`` before it."""

    dropped: int
    span_s: float

    def suffix(self, what: str = "like it", note: str = "") -> str:
        """`` (and 512 more like it in the last 10 s<note>)``, or "" when nothing was dropped."""
        if not self.dropped:
            return ""
        return f" (and {self.dropped} more {what} in the last {self.span_s:.0f} s{note})"


@dataclass(slots=True)
class _Key:
    admitted: int = 0  # events admitted in the current burst
    dropped: int = 0  # events dropped since the last admitted one
    last_admitted: float = -math.inf
    last_seen: float = -math.inf


class RateLimit:
    """Per-key limit: ``burst`` events, then one summary per ``period_s`` (see the module doc)."""

    def __init__(self, burst: int = 10, period_s: float = 10.0, *, max_keys: int = 1024):
        if int(burst) != burst or burst < 1:
            raise UsageError(f"burst must be a whole number of events >= 1, got {burst!r}")
        if not (period_s > 0 and math.isfinite(period_s)):
            raise UsageError(f"period_s must be a positive number of seconds, got {period_s!r}")
        if int(max_keys) != max_keys or max_keys < 1:
            raise UsageError(f"max_keys must be a whole number >= 1, got {max_keys!r}")
        self.burst, self.period_s, self.max_keys = int(burst), float(period_s), int(max_keys)
        self._keys: dict[Hashable, _Key] = {}
        self._pruned_at = -math.inf

    def admit(self, key: Hashable, now: float) -> Admitted | None:
        """``Admitted`` when the event of ``key`` at ``now`` should be logged (or answered), None to drop it."""
        st = self._state(key, now)
        if st.dropped == 0 and now - st.last_seen >= self.period_s:
            st.admitted = 0  # quiet for a whole period: a fresh burst
        st.last_seen = now
        if st.admitted < self.burst:
            st.admitted += 1
            st.last_admitted = now
            return Admitted(0, 0.0)
        if now - st.last_admitted < self.period_s:
            st.dropped += 1
            return None
        out = Admitted(st.dropped, now - st.last_admitted)
        st.dropped, st.last_admitted = 0, now
        return out

    def pending(self) -> dict[Hashable, int]:
        """Events dropped since each key's last admitted one (for a final summary at shutdown)."""
        return {("(other)" if k is _OVERFLOW else k): st.dropped for k, st in self._keys.items() if st.dropped}

    def _state(self, key: Hashable, now: float) -> _Key:
        st = self._keys.get(key)
        if st is not None:
            return st
        if len(self._keys) >= self.max_keys and now - self._pruned_at >= self.period_s:
            self._pruned_at = now
            self._keys = {k: s for k, s in self._keys.items()
                          if k is _OVERFLOW or s.dropped or now - s.last_seen < self.period_s}
        if len(self._keys) >= self.max_keys:
            key = _OVERFLOW
        return self._keys.setdefault(key, _Key())
