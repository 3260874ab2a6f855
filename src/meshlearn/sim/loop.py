"""The discrete-event kernel: a heap of events on virtual time, nothing else.

Entries are lists ``[time, seq, callback, arg]``; ``seq`` is a strictly increasing counter, so
ties in time resolve in scheduling order and the heap never compares callbacks. Cancelling sets
the callback to None (lazy deletion), which keeps cancel O(1). The loop is deliberately small:
its speed is benchmarked against a bare ``heapq`` loop (benchmarks/bench_simloop.py).
"""

from __future__ import annotations

import heapq
import math
from typing import Any, Callable

__all__ = ["EventLoop", "EventHandle"]

_heappush = heapq.heappush

EventHandle = list  # [time, seq, callback | None, arg]; opaque to callers


class EventLoop:
    """Virtual-time event loop with cancellable events."""

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[list] = []
        self._seq = 0
        self.events_run = 0

    def call_at(self, time: float, callback: Callable[[Any], None], arg: Any = None) -> EventHandle:
        """Schedule `callback(arg)` at virtual `time` (never earlier than now)."""
        if time < self.now:
            time = self.now
        self._seq += 1
        entry = [time, self._seq, callback, arg]
        _heappush(self._heap, entry)
        return entry

    def call_later(self, delay: float, callback: Callable[[Any], None], arg: Any = None) -> EventHandle:
        """Schedule `callback(arg)` `delay` seconds from now (negative delays clamp to 0)."""
        self._seq += 1
        entry = [self.now + (delay if delay > 0.0 else 0.0), self._seq, callback, arg]
        _heappush(self._heap, entry)
        return entry

    @staticmethod
    def cancel(handle: EventHandle) -> None:
        handle[2] = None

    def pending(self) -> int:
        return sum(1 for e in self._heap if e[2] is not None)

    def run(self, until: float = math.inf, max_events: int | None = None) -> None:
        """Run events with time <= `until` (and at most `max_events`); stops early on `stop()`."""
        heap, pop = self._heap, heapq.heappop
        budget = -1 if max_events is None else max_events
        self._stopped = False
        count = 0
        while heap and count != budget and not self._stopped:
            entry = pop(heap)
            if entry[0] > until:
                _heappush(heap, entry)
                break
            callback = entry[2]
            if callback is not None:
                self.now = entry[0]
                callback(entry[3])
                count += 1
        self.events_run += count
        if until != math.inf and not self._stopped and self.now < until and (not heap or heap[0][0] > until):
            self.now = until

    def stop(self) -> None:
        """Make the current `run()` return after the event being processed."""
        self._stopped = True
