"""A head and a tail in two real AsyncioRuntimes over loopback UDP: the head learns why nothing works.

Issue 12, item 7: channel settings that differ between device and server used to fail silently
(accuracy 0, exit 0). Toy numpy models (identity head, argmax tail), so no torch and well under 2 s.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from meshlearn.runtime import AsyncioRuntime
from meshlearn.split.channel import ChannelSpec
from meshlearn.split.nodes import HeadFailure, SplitHead, SplitTail

pytestmark = pytest.mark.timeout(30)
LOCAL, SECRET = "127.0.0.1", b"split-settings-test-key"
N = 64


def _nodes(head_spec: ChannelSpec, tail_spec: ChannelSpec, samples: int = 20, timeout: float = 2.0):
    rng = np.random.default_rng(0)
    y = rng.integers(0, N, samples)
    x = rng.random((samples, N)).astype(np.float32)
    x[np.arange(samples), y] = 2.0
    head = SplitHead("device", "tail", lambda s: s, x, y, head_spec, reply_timeout_s=timeout, give_up_unheard=True)
    return head, SplitTail("tail", lambda z: int(np.argmax(z)), (N,), tail_spec)


def _run(head: SplitHead, tail: SplitTail, *, head_secret: bytes = SECRET) -> tuple[float, AsyncioRuntime]:
    """Serve the tail, run the head against it; returns (seconds the head ran, the tail's runtime)."""

    async def main():
        server = AsyncioRuntime(listen=(LOCAL, 0), secret=SECRET)
        server.add_node(tail)
        await server.start()
        serving = asyncio.ensure_future(server.run(timeout=20))
        client = AsyncioRuntime(peers={"tail": server.address}, secret=head_secret)
        client.add_node(head)
        loop = asyncio.get_running_loop()
        start = loop.time()
        assert await client.run(timeout=20)
        took = loop.time() - start
        server.context("tail").stop()
        await serving
        return took, server

    return asyncio.run(main())


def test_the_device_hears_which_channel_setting_differs_on_its_first_sample():
    device = ChannelSpec(quant="uniform", bits=8, elements_per_packet=16, deadline_s=0.05)
    server = ChannelSpec(quant="uniform", bits=4, elements_per_packet=16, deadline_s=0.05)
    head, tail = _nodes(device, server)
    took, _ = _run(head, tail)
    assert head.failure == HeadFailure("spec_mismatch", (("bits", 8, 4),))
    assert "bits (device 8, server 4)" in str(head.failure)
    assert took < 1.0, "the answer comes at once, not after the 2 s reply timeout"
    assert len(head.results) == 0 and tail.stats["settings_sent"] == 1 and tail.stats["samples"] == 0


def test_matching_settings_still_answer_every_sample():
    spec = ChannelSpec(quant="uniform", bits=8, elements_per_packet=16, deadline_s=0.05)
    head, tail = _nodes(spec, spec, samples=10)
    _run(head, tail)
    assert head.failure is None and head.summary()["answered"] == 10 and head.summary()["accuracy_pct"] == 100.0
    assert tail.stats["settings_sent"] == 0


def test_with_another_secret_nothing_comes_back_and_the_device_stops_at_the_first_timeout():
    spec = ChannelSpec(quant="fp16", elements_per_packet=16, deadline_s=0.05)
    head, tail = _nodes(spec, spec, samples=50, timeout=0.3)
    took, server = _run(head, tail, head_secret=b"another key")
    assert head.failure == HeadFailure("no_reply") and len(head.results) == 1
    assert 0.3 <= took < 1.5, "one reply timeout, not 50 of them"
    assert server.stats["datagrams_rejected"] == 4 and tail.stats["packets"] == 0
