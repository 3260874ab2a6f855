"""`meshlearn overlay sim`: each protocol runs from one config into the run store."""

import pytest

from meshlearn.cli import main
from meshlearn.config import load_config
from meshlearn.overlay.experiment import OverlayExperiment, flatten_results, run_overlay
from meshlearn.store import RunStore

SMALL = {
    "swim": ["swim.nodes=40", "swim.duration_s=40", "swim.crash_fraction=0.05"],
    "propagation": ["propagation.nodes=64", "propagation.duration_s=30", "propagation.churn_per_min=0.05"],
    "dsml": ["dsml.nodes=64", "dsml.rounds=2", "dsml.maintenance_ops=2"],
}


@pytest.mark.parametrize("protocol", sorted(SMALL))
def test_each_protocol_stores_its_results(tmp_path, protocol):
    cfg = load_config(OverlayExperiment, None, [f"protocol={protocol}", *SMALL[protocol]])
    run, results = run_overlay(cfg, RunStore(tmp_path), command="test")
    assert run.info["status"] == "completed" and run.info["protocol"] == protocol
    stored = {row.key for row in run.metrics.rows()}
    assert stored == {f"{protocol}.{k}" for k, _, _ in flatten_results(results)}
    assert len(stored) > 5


def test_swim_experiment_detects_its_crashes_without_false_deaths(tmp_path):
    cfg = load_config(OverlayExperiment, None, SMALL["swim"])
    _, results = run_overlay(cfg, RunStore(tmp_path), command="test")
    assert results["crashed"] == 2 and results["detected_fraction"] == 1.0 and results["false_deaths"] == 0
    assert all(0 < row["first_suspect_s"] < row["first_dead_s"] <= row["all_know_s"] for row in results["crashes"])


def test_flatten_results_keeps_numbers_and_row_indices():
    rows = flatten_results({"a": 1, "b": {"c": 2.5, "d": "text"}, "e": [{"f": 3}, {"f": 4}], "g": float("nan")})
    assert rows == [("a", 1.0, None), ("b.c", 2.5, None), ("e.f", 3.0, 0), ("e.f", 4.0, 1)]


def test_unknown_protocols_and_keys_are_config_errors(tmp_path, capsys):
    with pytest.raises(ValueError, match="swim"):
        load_config(OverlayExperiment, None, ["protocol=kademlia"])
    with pytest.raises(SystemExit) as stop:
        main(["overlay", "sim", "--set", "swim.nodez=5", "--runs-dir", str(tmp_path)])
    assert stop.value.code == 2 and "nodez" in capsys.readouterr().err


def test_runs_show_lists_an_overlay_runs_metrics(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["overlay", "sim", *sum((["--set", s] for s in SMALL["swim"]), []), "--runs-dir", str(tmp_path)])
    assert stop.value.code == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(["runs", "show", "latest", "--runs-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert stop.value.code == 0 and "[completed]" in out and "swim.false_deaths" in out
    assert "swim.crashes.first_dead_s (mean of 2)" in out
