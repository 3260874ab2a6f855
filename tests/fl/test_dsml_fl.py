"""Hierarchical FedAvg over the skip mesh (fl.algorithm = "dsml"): accuracy, parent and root crashes."""

import pytest

from meshlearn.errors import ConfigError
from meshlearn.experiment.fl.build import build_simulation, client_ids
from meshlearn.experiment.fl.schema import FLExperiment, fl_config
from meshlearn.fl.dsml import member_vectors
from meshlearn.overlay.dsml.sim import dsml_parents

N = 12


def _cfg(algorithm: str, crashes=()) -> FLExperiment:
    return fl_config({
        "name": "t", "data": {"clients": N}, "fl": {"rounds": 6, "epochs": 1, "algorithm": algorithm},
        "faults": {"crashes": list(crashes)}})


def _run(cfg: FLExperiment) -> dict[int, dict[str, float]]:
    s = build_simulation(cfg)
    s.sim.run(until=2000)
    rounds: dict[int, dict[str, float]] = {}
    for row in s.sim.sink.rows:
        rounds.setdefault(row["round"], {})[row["key"]] = row["value"]
    return rounds


def _hierarchy():
    parents, root = dsml_parents(list(range(N)), dict(enumerate(member_vectors(0, N))))
    children = {k: [c for c, ps in parents.items() if ps and ps[0] == k] for k in parents}
    return parents, root, children


def test_dsml_trains_digits_as_well_as_flat_fedavg():
    flat, mesh = _run(_cfg("fedavg")), _run(_cfg("dsml"))
    assert sorted(mesh) == list(range(1, 7))
    assert all(r["clients_completed"] == N for r in mesh.values())
    assert mesh[6]["accuracy"] >= flat[6]["accuracy"] - 0.05 and mesh[6]["accuracy"] > 0.8
    # every member's sum goes up once and the model comes down once: the mesh moves about what a star does
    up, flat_up = sum(r["bytes_up"] for r in mesh.values()), sum(r["bytes_up"] for r in flat.values())
    assert 0.8 * flat_up < up < 1.2 * flat_up and all(r["bytes_down"] > 0 for r in mesh.values())


def test_a_crashed_parent_is_failed_over_and_its_children_reattach():
    parents, root, children = _hierarchy()
    victim = max((k for k in parents if k != root), key=lambda k: len(children[k]))
    assert children[victim]
    rounds = _run(_cfg("dsml", [{"node": client_ids(N)[victim], "at": 7.0}]))  # mid round 2
    assert sorted(rounds) == list(range(1, 7))
    assert rounds[2]["clients_completed"] == N - 1  # the victim's children reached the root through copies
    assert all(rounds[r]["clients_completed"] == N - 1 for r in range(3, 7))
    assert rounds[6]["accuracy"] > 0.8


def test_a_new_root_takes_over_when_the_root_crashes():
    _, root, _ = _hierarchy()
    rounds = _run(_cfg("dsml", [{"node": client_ids(N)[root], "at": 7.0}]))
    assert max(rounds) == 6 and 2 not in rounds  # the round the root died in is abandoned
    assert all(rounds[r]["clients_completed"] == N - 1 for r in range(3, 7))
    assert rounds[6]["accuracy"] > 0.8


def test_the_dsml_section_is_strict():
    with pytest.raises(ConfigError, match="dsml.slot: unknown key"):
        fl_config({"dsml": {"slot": 1}})
    cfg = fl_config({"fl": {"algorithm": "dsml"}, "dsml": {"level_slot_s": 2.0}})
    assert cfg.dsml.level_slot_s == 2.0
