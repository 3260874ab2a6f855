"""Pure parts of the decentralized peers: open-row schedule, gossip mixing, share checks, the ledger."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from pydantic import ValidationError

from meshlearn.errors import ProtocolError, UsageError
from meshlearn.testing import StubSetup
from meshlearn.fl.decentral import DecentralSettings, EpochLedger, build_cmfd, check_probs, gossip_mix, open_rows
from meshlearn.fl.tram import TramSettings


def test_open_rows_are_shared_by_seed_and_epoch():
    a, b = open_rows(3, 100, 20, seed=7), open_rows(3, 100, 20, seed=7)
    assert np.array_equal(a, b) and len(np.unique(a)) == 20 and np.all(np.diff(a) > 0)
    assert not np.array_equal(a, open_rows(4, 100, 20, seed=7))
    assert np.array_equal(open_rows(1, 50, 300, seed=0), np.arange(50))


def test_gossip_mix_keeps_self_weight_and_ignores_no_neighbours():
    own = {"w": np.full(3, 1.0, np.float32)}
    others = [{"w": np.full(3, 2.0, np.float32)}, {"w": np.full(3, 4.0, np.float32)}]
    mixed = gossip_mix(own, others, self_weight=0.1)
    np.testing.assert_allclose(mixed["w"], 0.1 * 1.0 + 0.9 * 3.0, rtol=1e-6)
    assert gossip_mix(own, [], 0.1) is own


def test_check_probs_rejects_wrong_shape_and_non_probabilities():
    good = np.full((4, 10), 0.1, np.float32)
    assert check_probs({"probs": good}, 4, 10) is good
    for bad in ({}, {"probs": good[:3]}, {"probs": good * 20}, {"probs": np.full((4, 10), np.nan, np.float32)},
                {"probs": good.astype(np.int64)}):
        with pytest.raises(ProtocolError):
            check_probs(bad, 4, 10)


class FakeCtx:
    def __init__(self, node_id, clock):
        self.node_id, self.clock, self.rows = node_id, clock, clock["rows"]

    @property
    def now(self):
        return self.clock["now"]

    def record(self, key, value, *, round=None, per_node=False):
        self.rows.append((round, key, value))


def ledger_world(peers=("a", "b", "c"), lag_limit=4):
    clock = {"now": 0.0, "rows": []}
    return EpochLedger(peers, lag_limit), {p: FakeCtx(p, clock) for p in peers}, clock


def test_ledger_writes_a_row_when_every_peer_reported_with_virtual_time_last():
    ledger, ctx, clock = ledger_world()
    ledger.report(ctx["a"], 1, 100, 0.5)
    ledger.report(ctx["b"], 1, 200, 0.7)
    assert clock["rows"] == []
    clock["now"] = 3.0
    ledger.report(ctx["c"], 1, 300, 0.9)
    rows = {k: v for _, k, v in clock["rows"]}
    assert rows["accuracy"] == pytest.approx(0.7) and rows["accuracy_min"] == 0.5
    assert rows["consensus_spread"] == pytest.approx(0.4) and rows["bytes_total"] == 600
    assert clock["rows"][-1] == (1, "virtual_time", 3.0)


def test_ledger_skips_crashed_or_lagging_peers_and_close_flushes():
    ledger, ctx, clock = ledger_world(lag_limit=3)
    ledger.watch(lambda p: p != "c")
    ledger.report(ctx["a"], 1, 10)
    ledger.report(ctx["b"], 1, 10)
    assert [k for _, k, _ in clock["rows"]] == ["peers_reporting", "bytes_total", "virtual_time"]
    ledger2, ctx2, clock2 = ledger_world(lag_limit=3)
    ledger2.report(ctx2["c"], 1, 1)
    for epoch in (1, 2, 3):
        ledger2.report(ctx2["a"], epoch, 1)
        ledger2.report(ctx2["b"], epoch, 1)
    written = lambda: [r for r, k, _ in clock2["rows"] if k == "virtual_time"]  # noqa: E731
    assert written() == [1]  # c may still be slow
    ledger2.report(ctx2["a"], 4, 1)
    assert written() == [1, 2, 3]  # c is now 3 epochs behind the newest report: presumed gone
    ledger2.close()
    assert written() == [1, 2, 3, 4]


def test_ledger_late_report_adds_its_bytes_to_the_next_row():
    ledger, ctx, clock = ledger_world(peers=("a", "b"), lag_limit=2)
    ledger.report(ctx["a"], 1, 5)
    ledger.report(ctx["a"], 2, 5)  # b is 2 epochs behind: rows 1 and 2 are written without it
    ledger.report(ctx["b"], 1, 7)
    ledger.report(ctx["b"], 2, 5)
    ledger.report(ctx["a"], 3, 5)
    ledger.report(ctx["b"], 3, 5)
    bytes_rows = [(r, v) for r, k, v in clock["rows"] if k == "bytes_total"]
    assert bytes_rows == [(1, 5.0), (2, 5.0), (3, 22.0)]


def test_settings_reject_unknown_keys_and_bad_values():
    with pytest.raises(ValidationError):
        DecentralSettings(epoch=3)
    with pytest.raises(ValidationError):
        DecentralSettings(self_weight=1.5)
    with pytest.raises(ValidationError):
        TramSettings(routing="shortest")
    assert all(f.description for f in DecentralSettings.model_fields.values())
    assert all(f.description for f in TramSettings.model_fields.values())


def test_cmfd_needs_an_open_set():
    ws = SimpleNamespace(open=None)
    with pytest.raises(UsageError, match="open_size"):
        build_cmfd(StubSetup(ws, ["a", "b"], DecentralSettings()))


def test_algorithm_modules_do_not_import_torch():
    code = ("import sys, meshlearn.fl.decentral, meshlearn.fl.tram, meshlearn.fl.dsfl, meshlearn.fl.fd, "
            "meshlearn.fl.fedavg; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_module_all_lists_the_public_names():
    import meshlearn.fl.decentral as decentral
    import meshlearn.fl.tram as tram

    for module in (decentral, tram):
        public = {n for n, v in vars(module).items() if not n.startswith("_") and getattr(v, "__module__", None)
                  == module.__name__}
        assert public <= set(module.__all__), public - set(module.__all__)
