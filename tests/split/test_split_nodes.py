"""SplitHead / SplitTail in the simulator, with toy numpy models (no torch).

Toy task: a sample is a positive vector whose largest element sits at its label; the "head" is the
identity, the "tail" is argmax. A lost packet zero-fills its elements, so a sample goes wrong
exactly when the packet holding its peak is lost.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from meshlearn.errors import UsageError
from meshlearn.overlay.simnet import overlay_simulator
from meshlearn.split.channel import ChannelSpec, encode_packets, packet_plan
from meshlearn.split.nodes import HeadFailure, SplitHead, SplitTail, injected_losses
from meshlearn.split.packets import SplitReply, SplitSettings, TensorChunk, spec_digest
from meshlearn.testing import NodeHarness

N_ELEMENTS = 64
SPEC = ChannelSpec(quant="fp16", elements_per_packet=16, deadline_s=0.05)  # 4 packets per sample


def toy_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, N_ELEMENTS, n)
    x = rng.random((n, N_ELEMENTS)).astype(np.float32)
    x[np.arange(n), labels] = 2.0
    return x, labels


def run(n: int = 40, *, loss: float = 0.0, seed: int = 0, sim_seed: int = 0, spec: ChannelSpec = SPEC,
        tail_spec: ChannelSpec | None = None, window: int = 1):
    x, y = toy_data(n)
    head = SplitHead("head", "tail", lambda s: s, x, y, spec, loss=loss, seed=seed, window=window)
    tail = SplitTail("tail", lambda z: int(np.argmax(z)), (N_ELEMENTS,), tail_spec or spec)
    sim = overlay_simulator([head, tail], seed=sim_seed)
    sim.run(until=600)
    return head, tail, sim


def expected_accuracy(n: int, loss: float, seed: int, spec: ChannelSpec = SPEC) -> float:
    """What the channel alone predicts: a sample is right iff the packet with its peak was sent."""
    x, y = toy_data(n)
    order, per, packets = packet_plan(N_ELEMENTS, spec)
    where = np.argsort(order) // per  # packet holding each element
    hits = [not injected_losses(seed, i, packets, loss)[where[label]] for i, label in enumerate(y)]
    return 100 * float(np.mean(hits))


def test_lossless_run_answers_every_sample_correctly():
    head, tail, sim = run(20)
    summary = head.summary()
    assert head.done and summary["accuracy_pct"] == 100.0 and summary["misses"] == 0
    assert summary["injected_loss"] == 0.0 and summary["accepted_of_sent"] == 1.0
    assert tail.stats["samples"] == 20 and tail.stats["packets"] == 80
    # all four packets arrived: the tail answered at once, long before its 50 ms deadline
    assert summary["latency_ms_p95"] < 10
    assert sim.context("head").tx_bytes == 20 * summary["wire_bytes_per_sample"]


def _mean_run(drops: np.ndarray) -> float:
    """Mean length of the runs of consecutive True values."""
    edges = np.diff(np.r_[0, drops.astype(int), 0])
    return float(np.mean(np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)))


def test_bursty_injected_losses_keep_the_mean_and_lengthen_the_runs():
    bursty = np.concatenate([injected_losses(1, i, 64, 0.3, burst=5.0) for i in range(2000)])
    plain = np.concatenate([injected_losses(1, i, 64, 0.3) for i in range(2000)])
    assert bursty.mean() == pytest.approx(0.3, abs=0.02) and plain.mean() == pytest.approx(0.3, abs=0.01)
    # runs are cut at sample edges (64 packets), so a bit under 5; independent drops give 1/(1-p) = 1.43
    assert 4.0 < _mean_run(bursty) < 5.2 and _mean_run(plain) < 1.6
    assert np.array_equal(injected_losses(1, 9, 64, 0.3, burst=5.0), injected_losses(1, 9, 64, 0.3, burst=5.0))
    with pytest.raises(UsageError, match="burst"):
        SplitHead("head", "tail", lambda x: x, [np.zeros(4)], [0], ChannelSpec(), loss=0.3, burst=0.5)


def test_injected_losses_are_keyed_by_seed_and_sample_not_by_the_runtime():
    a = injected_losses(7, 3, 100, 0.3)
    assert np.array_equal(a, injected_losses(7, 3, 100, 0.3))
    assert not np.array_equal(a, injected_losses(7, 4, 100, 0.3))
    assert not np.array_equal(a, injected_losses(8, 3, 100, 0.3))
    assert 0.15 < a.mean() < 0.45 and not injected_losses(7, 3, 100, 0.0).any()
    # different simulator seeds (other node rng streams, other link jitter): identical predictions
    h1, _, _ = run(60, loss=0.3, seed=5, sim_seed=0)
    h2, _, _ = run(60, loss=0.3, seed=5, sim_seed=99)
    assert np.array_equal(h1.predictions(), h2.predictions())
    assert h1.summary()["accuracy_pct"] == pytest.approx(expected_accuracy(60, 0.3, 5))


def test_lossy_samples_wait_for_the_deadline_and_fully_dropped_ones_are_immediate_misses():
    head, tail, _ = run(60, loss=0.5, seed=1)
    full = [r for r in head.results.values() if r.sent == r.packets]
    partial = [r for r in head.results.values() if 0 < r.sent < r.packets]
    nothing = [r for r in head.results.values() if r.sent == 0]
    assert full and partial and nothing
    assert all(r.latency_s < 0.01 for r in full)
    assert all(0.05 <= r.latency_s < 0.06 for r in partial)  # first arrival + deadline
    assert all(r.prediction == -1 and math.isnan(r.latency_s) and r.wire_bytes == 0 for r in nothing)
    assert all(r.accepted == r.sent for r in partial)  # the LAN link loses nothing
    assert head.summary()["misses"] == len(nothing)
    assert tail.stats["samples"] == len(full) + len(partial)


def test_reach_rate_lets_the_tail_answer_before_the_deadline():
    spec = ChannelSpec(quant="fp16", elements_per_packet=16, deadline_s=0.05, reach_rate=0.5)
    head, _, _ = run(30, loss=0.3, seed=2, spec=spec)
    answered = [r for r in head.results.values() if r.prediction >= 0 and r.sent >= 2]
    assert answered and all(r.latency_s < 0.01 for r in answered)


def test_window_keeps_several_samples_in_flight_with_the_same_answers():
    one, _, _ = run(40, loss=0.3, seed=3)
    four, _, _ = run(40, loss=0.3, seed=3, window=4)
    assert np.array_equal(one.predictions(), four.predictions())


def test_a_tail_with_another_channel_spec_tells_the_head_which_setting_differs():
    other = ChannelSpec(quant="fp16", elements_per_packet=16, deadline_s=0.05, perm_seed=1)
    assert spec_digest(other) != spec_digest(SPEC)
    head, tail, sim = run(5, tail_spec=other)
    assert tail.stats["spec_mismatch"] == 4 and tail.stats["samples"] == 0  # the first sample's chunks only
    assert tail.stats["settings_sent"] == 1
    assert head.failure == HeadFailure("spec_mismatch", (("perm_seed", 0, 1),))
    assert str(head.failure) == "split channel settings differ from the server's: perm_seed (device 0, server 1)"
    assert not sim.is_alive("head") and sim.now < 0.01  # gave up at the first answer, not after 5 timeouts


def test_every_differing_setting_is_named_with_both_values():
    device = ChannelSpec(quant="uniform", bits=8, elements_per_packet=16, deadline_s=0.05)
    server = ChannelSpec(quant="uniform", bits=4, elements_per_packet=32, order="sequential", deadline_s=0.05)
    head, _, _ = run(3, spec=device, tail_spec=server)
    assert head.failure.differences == (("bits", 8, 4), ("elements_per_packet", 16, 32),
                                        ("order", "permuted", "sequential"))
    assert "bits (device 8, server 4), elements_per_packet (device 16, server 32), order (device permuted, " \
           "server sequential)" in str(head.failure)


def test_the_tail_sends_its_settings_at_most_once_per_sender_per_period():
    x, _ = toy_data(1)
    other = ChannelSpec(quant="fp16", elements_per_packet=16, deadline_s=0.05, perm_seed=7)
    bodies = encode_packets(x[0], other, tag=1)
    tail = SplitTail("tail", lambda z: int(np.argmax(z)), (N_ELEMENTS,), SPEC, notice_s=1.0)
    h = NodeHarness(tail, peers=["a", "b"])
    for step in range(24):  # 3 s of mismatched chunks every 125 ms (exact in binary) from two heads
        for src in ("a", "b"):
            h.deliver(src, TensorChunk(spec_digest(other), bodies[step % 4]), reliable=False)
        h.advance(0.125)
    notices = [(s.dst, s.time) for s in h.sent]
    assert all(isinstance(s.msg, SplitSettings) and s.msg.spec == spec_digest(SPEC) for s in h.sent)
    assert [t for dst, t in notices if dst == "a"] == pytest.approx([0.0, 1.0, 2.0])
    assert len(notices) == 6 and tail.stats["spec_mismatch"] == 48 and tail.stats["settings_sent"] == 6
    assert len(h.logs("tail")) <= 10 + 1  # the drops are logged rate-limited, counted in full


def test_a_head_that_hears_nothing_gives_up_at_the_first_timeout_when_asked():
    x, y = toy_data(10)
    head = SplitHead("head", "tail", lambda s: s, x, y, SPEC, reply_timeout_s=0.5, give_up_unheard=True)
    h = NodeHarness(head, peers=["tail"])  # a stub tail that never answers
    h.advance(0.49)
    assert head.failure is None and h.is_alive()
    h.advance(0.02)
    assert head.failure == HeadFailure("no_reply") and not h.is_alive() and len(head.results) == 1
    patient = SplitHead("head", "tail", lambda s: s, x, y, SPEC, reply_timeout_s=0.5)  # the default: misses
    h2 = NodeHarness(patient, peers=["tail"])
    h2.advance(10)
    assert patient.failure is None and patient.summary()["misses"] == 10


def test_a_head_that_heard_the_tail_keeps_going_through_timeouts_and_ignores_stray_settings():
    x, y = toy_data(3)
    head = SplitHead("head", "tail", lambda s: s, x, y, SPEC, reply_timeout_s=0.5, give_up_unheard=True)
    h = NodeHarness(head, peers=["tail", "other"])
    h.deliver("tail", SplitReply(0, int(np.argmax(x[0])), 4, 4), reliable=False)
    other = ChannelSpec(quant="fp16", elements_per_packet=16, perm_seed=3)
    h.deliver("other", SplitSettings.of(other), reliable=False)  # not from the tail: ignored
    h.deliver("tail", SplitSettings.of(SPEC), reliable=False)  # the head's own settings: nothing differs
    h.advance(5)
    assert head.failure is None and head.done and head.summary()["answered"] == 1


def test_run_offsets_sample_tags_so_a_restarted_head_is_new_to_the_tail():
    x, y = toy_data(20)
    tail = SplitTail("tail", lambda z: int(np.argmax(z)), (N_ELEMENTS,), SPEC, forget_s=100.0)
    answers = []
    for run_id in (2**32 - 5, 2**32 - 5, 1000):  # wraps around 2**32; the repeat finds every tag answered
        head = SplitHead("head", "tail", lambda s: s, x, y, SPEC, run=run_id)
        overlay_simulator([head, tail]).run(until=60)
        answers.append(head.summary()["answered"])
    assert answers == [20, 0, 20] and tail.stats["late"] == 80


def test_tail_counts_bad_duplicate_and_late_chunks_and_answers_once():
    x, _ = toy_data(1)
    bodies = encode_packets(x[0], SPEC, tag=9)
    digest = spec_digest(SPEC)
    bad = bytearray(bodies[0])
    bad[-1:] = b""  # one payload byte short
    tail = SplitTail("tail", lambda z: int(np.argmax(z)), (N_ELEMENTS,), SPEC)
    h = NodeHarness(tail, peers=["evil"])
    for at, body in [(0.0, bytes(bad)), (0.0, bodies[0]), (0.001, bodies[0]), (0.002, bodies[1]), (0.2, bodies[2])]:
        h.advance(at - h.now)
        h.deliver("evil", TensorChunk(digest, body), reliable=False)
    assert tail.stats["rejected"] == 1 and tail.stats["duplicates"] == 1 and tail.stats["late"] == 1
    assert tail.stats["samples"] == 1
    (reply,) = h.sent
    assert isinstance(reply.msg, SplitReply) and (reply.msg.sample, reply.msg.accepted, reply.msg.total) == (9, 2, 4)
    assert reply.dst == "evil" and reply.time == pytest.approx(0.05)  # deadline counted from the first accepted chunk


def test_bad_arguments_say_what_to_pass():
    x, y = toy_data(2)
    with pytest.raises(UsageError, match="deadline"):
        SplitTail("tail", int, (N_ELEMENTS,), ChannelSpec())
    with pytest.raises(UsageError, match="loss"):
        SplitHead("head", "tail", lambda s: s, x, y, SPEC, loss=1.0)
    with pytest.raises(UsageError, match="window"):
        SplitHead("head", "tail", lambda s: s, x, y, SPEC, window=0)
    with pytest.raises(UsageError, match="32 bits"):
        SplitHead("head", "tail", lambda s: s, x, y, SPEC, run=2**32)
    with pytest.raises(UsageError, match="labels"):
        SplitHead("head", "tail", lambda s: s, x, y[:1], SPEC)


def test_cli_trains_infers_in_simulation_and_renders_a_heatmap(tmp_path, capsys, monkeypatch):
    import json

    import torch

    from meshlearn.cli import main

    def cli(*args: str) -> tuple[int, str, str]:
        try:
            main(list(args))
            code = 0
        except SystemExit as stop:
            code = stop.code
        out, err = capsys.readouterr()
        return code, out, err

    monkeypatch.delenv("MESHLEARN_SECRET", raising=False)
    threads = torch.get_num_threads()
    try:
        model = tmp_path / "cnn.safetensors"
        code, out, _ = cli("split", "train", "--out", str(model), "--epochs", "2")
        assert code == 0 and json.loads(out)["cut_shape"] == [32, 8, 8]
        code, out, _ = cli("split", "infer", "--model", str(model), "--simulate", "--samples", "30", "--loss", "0.3")
        result = json.loads(out)
        assert code == 0 and result["samples"] == 30 and result["mode"] == "simulated"
        assert len(result["predictions"]) == 30 and 0.1 < result["injected_loss"] < 0.5
        code, out, _ = cli("split", "heatmap", "--model", str(model), "--out", str(tmp_path / "h.png"))
        assert code == 0 and (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"
        code, _, err = cli("split", "infer", "--model", str(tmp_path / "none"), "--simulate")
        assert code == 2 and "split train --out" in err and err.count("\n") == 1
        code, _, err = cli("split", "serve", "--model", str(model), "--listen", "127.0.0.1:0")
        assert code == 2 and "no cluster secret" in err
    finally:
        torch.set_num_threads(threads)
