"""meshlearn.testing: the harness users drive their own nodes with (and its documented examples)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import meshlearn.testing as testing
from meshlearn.errors import ProtocolError, UsageError
from meshlearn.executors import InlineExecutor
from meshlearn.net import LinkSpec
from meshlearn.node import Node
from meshlearn.testing import NodeHarness, Sent
from meshlearn.wire import Message

ROOT = Path(__file__).resolve().parents[1]


class Counter(Node):
    """Counts 'c.add' messages (rejecting negative ones), reports on a timer, answers 'c.get'."""

    def __init__(self, node_id: str, every: float = 1.0):
        super().__init__(node_id)
        self.every, self.total, self.starts = every, 0, 0

    def on_start(self, ctx):
        self.starts += 1
        ctx.set_timer("report", self.every)

    def on_message(self, ctx, src, msg):
        if msg.kind == "c.add":
            if msg.meta["n"] < 0:
                raise ProtocolError(f"{src} sent a negative count")
            self.total += msg.meta["n"]
        elif msg.kind == "c.get":
            ctx.send(src, Message.make("c.total", {"w": np.full(2, self.total, np.float32)}, n=self.total))

    def on_timer(self, ctx, name):
        ctx.record("total", self.total)
        ctx.log(f"total is {self.total}")
        ctx.set_timer("report", self.every)


def test_module_docstring_example_runs():
    code = re.search(r"::\n\n(.*?)\n\n(?=\S)", testing.__doc__, re.S).group(1)
    exec(compile(_dedent(code), "meshlearn.testing example", "exec"), {})


def test_guide_example_runs():
    guide = (ROOT / "docs" / "guide.md").read_text()
    section = guide[guide.index("### Testing your own node"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    exec(compile(code, "guide: Testing your own node", "exec"), {})


def _dedent(code: str) -> str:
    return "\n".join(line[4:] for line in code.splitlines())


def test_deliver_answers_and_sent_holds_decoded_messages_with_their_destination():
    h = NodeHarness(Counter("c"), peers=["a", "b"])
    h.deliver("a", Message.make("c.add", n=2))
    h.deliver("b", Message.make("c.add", n=3))
    h.deliver("b", Message.make("c.get"))
    (out,) = h.sent
    assert isinstance(out, Sent) and (out.src, out.dst, out.time) == ("c", "b", 0.0)
    assert out.msg.kind == "c.total" and out.msg.meta["n"] == 5
    np.testing.assert_array_equal(out.msg.tensors["w"], [5.0, 5.0])  # crossed the wire codec
    assert h.take_sent() == [out] and h.sent == [] and h.context().tx_bytes > 0


def test_advance_fires_timers_in_virtual_time_and_metrics_and_logs_are_kept():
    h = NodeHarness(Counter("c", every=2.0), peers=["a"])
    assert h.timers() == {"report": 2.0} and h.now == 0.0
    h.deliver("a", Message.make("c.add", n=4))
    assert h.advance(5.0) == 5.0
    assert h.metrics("total") == [4.0, 4.0] and h.timers() == {"report": 6.0}
    assert h.logs() == ["total is 4", "total is 4"]
    assert [row["t_sim"] for row in h.rows] == [2.0, 4.0]


def test_a_peer_error_is_counted_and_logged_and_the_node_keeps_going():
    h = NodeHarness(Counter("c"), peers=["a"])
    h.deliver("a", Message.make("c.add", n=-1))
    h.deliver("a", Message.make("c.add", n=1))
    assert h.peer_errors == 1 and h.node.total == 1 and h.is_alive()
    assert h.logs() == ["ProtocolError: a sent a negative count"]


def test_crash_drops_messages_and_timers_and_recover_restarts():
    h = NodeHarness(Counter("c"), peers=["a"])
    h.crash()
    assert not h.is_alive() and h.timers() == {}
    h.deliver("a", Message.make("c.add", n=5))
    h.advance(3.0)
    assert h.node.total == 0 and h.metrics("total") == [] and h.sim.dropped_messages == 1
    h.recover()
    assert h.node.starts == 2 and h.timers() == {"report": 4.0}


def test_responders_script_the_stub_peers_replies():
    class Asker(Node):
        def on_start(self, ctx):
            ctx.send("oracle", Message.make("q.ask", x=20))

        def on_message(self, ctx, src, msg):
            self.answer = (src, msg.meta["y"])

    node = Asker("me")
    h = NodeHarness(node, peers={"oracle": lambda src, msg: Message.make("q.reply", y=msg.meta["x"] + 1)})
    assert node.answer == ("oracle", 21) and [s.msg.kind for s in h.sent] == ["q.ask"]


@dataclass
class Square:
    x: int
    kind: str = "square"

    def flops(self, workspace) -> float:
        return 1.0


class Squarer:
    def run(self, task: Square) -> int:
        return task.x * task.x


def test_tasks_run_on_the_executor_and_several_nodes_can_be_hosted():
    class Worker(Node):
        def on_start(self, ctx):
            ctx.submit(Square(int(self.node_id[-1]) + 2))

        def on_task_done(self, ctx, task_id, result):
            ctx.send("sink", Message.make("w.done", r=result))

    h = NodeHarness(Worker("w0"), Worker("w1"), peers=["sink"], executor=InlineExecutor(Squarer()))
    assert sorted((s.src, s.msg.meta["r"]) for s in h.sent) == [("w0", 4), ("w1", 9)]
    assert h.timers("w1") == {} and h.is_alive("w1")


def test_a_lossy_or_slow_link_can_be_given():
    h = NodeHarness(Counter("c"), peers=["a"], link=LinkSpec(latency_s=0.5))
    h.deliver("a", Message.make("c.get"))  # still in flight
    assert h.node.total == 0 and h.sent == []
    h.advance(2.0)
    assert [(s.msg.kind, s.time) for s in h.sent] == [("c.total", pytest.approx(1.0, abs=1e-3))]


def test_rng_streams_match_a_plain_simulator_with_the_same_seed():
    class Drawer(Node):
        def on_start(self, ctx):
            self.draw = ctx.rng.random()

    from meshlearn.net import Network
    from meshlearn.sim.runtime import Simulator

    plain = Simulator(Network(None, LinkSpec(), {}, np.random.SeedSequence(3)), seed=3)
    alone = Drawer("d")
    plain.add_node(alone)
    plain.run()
    harnessed = Drawer("d")
    NodeHarness(harnessed, peers=["x"], seed=3)
    assert harnessed.draw == alone.draw


def test_misuse_says_what_to_do():
    with pytest.raises(UsageError, match="needs the node"):
        NodeHarness()
    h = NodeHarness(Counter("c"), peers=["a"])
    with pytest.raises(UsageError, match="not a stub peer"):
        h.deliver("zed", Message.make("c.get"))
    with pytest.raises(UsageError, match="not a hosted node"):
        h.timers("a")
    with pytest.raises(UsageError, match="finite"):
        h.advance(float("inf"))


def test_public_names():
    assert testing.__all__ == sorted(testing.__all__)
    assert all(getattr(testing, name) is not None for name in testing.__all__)
