"""Log lines about rejected input are capped (issue 12, item 6); the counters still count every event."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest
from rt_helpers import LOCAL, SECRET, Echo, until

from meshlearn.errors import UsageError
from meshlearn.host import HostContext, NodeHost
from meshlearn.ratelimit import RateLimit
from meshlearn.runtime import AsyncioRuntime

pytestmark = pytest.mark.timeout(30)


# ----- the limiter, on hand-picked times --------------------------------------------------------
def test_burst_then_one_summary_per_period_with_the_count_dropped():
    limit = RateLimit(burst=3, period_s=10.0)
    got = [limit.admit("k", t * 0.01) for t in range(1000)]  # 1000 events in 10 s
    admitted = [(i, a) for i, a in enumerate(got) if a is not None]
    assert [i for i, _ in admitted] == [0, 1, 2]  # the burst; the rest of the first 10 s is dropped
    summary = limit.admit("k", 12.0)
    assert summary is not None and summary.dropped == 997 and summary.span_s == pytest.approx(11.98)
    assert summary.suffix("rejected handshakes") == " (and 997 more rejected handshakes in the last 12 s)"
    assert limit.admit("k", 12.5) is None and limit.pending() == {"k": 1}


def test_quiet_keys_get_a_fresh_burst_and_keys_are_independent():
    limit = RateLimit(burst=2, period_s=5.0)
    assert [limit.admit("a", t) is not None for t in (0, 0, 0)] == [True, True, False]
    assert limit.admit("b", 0.0) == (0, 0.0)  # another key has its own burst
    assert limit.admit("a", 6.0).dropped == 1  # the dropped one is summarised first
    assert limit.admit("a", 20.0) == (0, 0.0) and limit.admit("a", 20.0) == (0, 0.0)  # quiet: a new burst


def test_once_per_key_per_period_with_burst_one():
    limit = RateLimit(burst=1, period_s=1.0)
    times = [i * 0.1 for i in range(50)]  # 5 s of events every 100 ms
    allowed = [t for t in times if limit.admit("head", t) is not None]
    assert len(allowed) == 5 and all(b - a >= 1.0 - 1e-9 for a, b in zip(allowed, allowed[1:]))


def test_invented_keys_cannot_grow_the_table_or_the_output_without_bound():
    limit = RateLimit(burst=1, period_s=10.0, max_keys=50)
    admitted = sum(limit.admit(f"sender-{i}", 1.0) is not None for i in range(10_000))
    assert admitted == 50 + 1  # one per key that fit, then one for the shared overflow key
    assert len(limit._keys) <= 51
    assert limit.admit("late", 30.0) is not None  # quiet keys are forgotten once a period has passed
    assert len(limit._keys) <= 51


@pytest.mark.parametrize("kw", [{"burst": 0}, {"burst": 1.5}, {"period_s": 0}, {"period_s": float("inf")},
                                {"max_keys": 0}])
def test_bad_limits_are_usage_errors(kw):
    with pytest.raises(UsageError):
        RateLimit(**kw)


# ----- the host: report() and the runtime's log() -----------------------------------------------
class ClockHost(NodeHost):
    """A host on a hand-driven clock (no I/O)."""

    t = 0.0

    @property
    def now(self) -> float:
        return self.t


def test_many_reports_count_exactly_and_log_a_bounded_number_of_lines(caplog):
    host = ClockHost(stat_keys=("handshakes_rejected", "datagrams_rejected"))
    with caplog.at_level(logging.WARNING, logger="meshlearn.host"):
        for i in range(20_000):  # 20 000 rejections over 20 s, two counters
            host.t = i * 0.001
            host.report("handshakes_rejected", None, f"rejected handshake from 10.0.0.{i % 250}:{i}: bad MAC")
            if i % 2:
                host.report("datagrams_rejected", None, f"rejected a datagram from 10.0.0.1:{i}: garbage")
    assert host.stats == {"handshakes_rejected": 20_000, "datagrams_rejected": 10_000}
    lines = [text for _, _, _, text in host.log_lines]
    assert len(lines) <= 2 * (10 + 2) and len(caplog.records) == len(lines)
    shakes = [ln for ln in lines if "handshake" in ln]
    assert len(shakes) == 10 + 1  # the burst, then one summary after 10 s
    # events 0..9 logged, 10..10008 dropped, 10009 (10 s after the last line) logged as the summary
    assert shakes[-1] == ("rejected handshake from 10.0.0.9:10009: bad MAC (and 9999 more handshakes_rejected in "
                          "the last 10 s; 10010 in all so far)")


def test_runtime_log_lines_are_limited_per_kind_but_a_nodes_own_lines_never():
    host = ClockHost()
    ctx = HostContext(host, "n", None)
    for i in range(500):
        host.log(None, "info", f"connection from 127.0.0.1:{40000 + i} closed before its handshake: reset")
        host.log("srv", "warning", f"cannot connect to 'peer-{i}' at 10.0.0.{i % 200}:7000: refused")
        ctx.log(f"round {i}: accuracy 0.5")
    lines = [text for _, _, _, text in host.log_lines]
    assert sum("closed before its handshake" in ln for ln in lines) == 10
    assert sum("cannot connect" in ln for ln in lines) == 10
    assert sum(ln.startswith("round ") for ln in lines) == 500


# ----- a real runtime flooded with garbage datagrams ---------------------------------------------
def test_a_datagram_flood_is_counted_exactly_and_logged_in_a_few_lines():
    async def main():
        rt, echo = AsyncioRuntime(listen=(LOCAL, 0), secret=SECRET), Echo("edge")
        rt.add_node(echo)
        await rt.start()
        serving = asyncio.ensure_future(rt.run(timeout=20))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for batch in range(12):  # batches, so the socket buffer never overflows and drops some
                for i in range(50):
                    s.sendto(b"garbage %d" % (batch * 50 + i), rt.address)
                await until(lambda: rt.stats["datagrams_rejected"] == (batch + 1) * 50, what="batch counted")
        rt.context("edge").stop()
        await serving
        return rt

    rt = asyncio.run(main())
    assert rt.stats["datagrams_rejected"] == 600
    rejected = [line for line in rt.log_lines if "datagram" in line[3]]
    assert 1 <= len(rejected) <= 10 + 1 + 1  # the burst, at most one periodic summary, the shutdown summary
    assert rt.log_lines[-1][3] == "590 more datagrams_rejected not logged since the last line about them; 600 in all"
