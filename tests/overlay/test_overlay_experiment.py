"""The overlay experiment kind: each protocol runs from one config into the run store (`meshlearn run` / `overlay sim`)."""

import pytest

from meshlearn.cli import main
from meshlearn.config import load_config
from meshlearn.errors import ConfigError
from meshlearn.experiment import run_experiment
from meshlearn.experiment.overlay import check, config_model, study_of
from meshlearn.store import RunStore
from meshlearn.study import flatten_results

SMALL = {
    "swim": ["swim.nodes=40", "swim.duration_s=40", "swim.crash_fraction=0.05"],
    "propagation": ["propagation.nodes=64", "propagation.duration_s=30", "propagation.churn_per_min=0.05"],
    "dsml": ["dsml.nodes=64", "dsml.rounds=2", "dsml.maintenance_ops=2"],
}


def cfg(protocol, *more):
    return load_config(config_model(), None, [f"protocol={protocol}", *SMALL[protocol], *more])


@pytest.mark.parametrize("protocol", sorted(SMALL))
def test_each_protocol_stores_its_results(tmp_path, protocol):
    c = cfg(protocol)
    run = run_experiment(c, RunStore(tmp_path))
    assert run.info["status"] == "completed" and run.info["protocol"] == protocol and run.info["kind"] == "overlay"
    results = study_of(c).run(getattr(c, protocol), seed=c.seed)  # the same study, run again: same numbers
    timed = lambda key: key.endswith("wall_s")  # noqa: E731  (wall-clock measurements differ between runs)
    stored = {(row.key, row.value, row.round) for row in run.metrics.rows() if not timed(row.key)}
    expected = {(f"{protocol}.{k}", v, r) for k, v, r in flatten_results(results) if not timed(k)}
    assert stored == expected and len(stored) > 5


def test_swim_experiment_detects_its_crashes_without_false_deaths():
    c = cfg("swim")
    results = study_of(c).run(c.swim, seed=c.seed)
    assert results["crashed"] == 2 and results["detected_fraction"] == 1.0 and results["false_deaths"] == 0
    assert all(0 < row["first_suspect_s"] < row["first_dead_s"] <= row["all_know_s"] for row in results["crashes"])


def test_flatten_results_keeps_numbers_and_row_indices():
    rows = flatten_results({"a": 1, "b": {"c": 2.5, "d": "text"}, "e": [{"f": 3}, {"f": 4}], "g": float("nan")})
    assert rows == [("a", 1.0, None), ("b.c", 2.5, None), ("e.f", 3.0, 0), ("e.f", 4.0, 1)]


def test_unknown_protocols_keys_and_another_protocols_settings_are_config_errors(tmp_path, capsys):
    with pytest.raises(ConfigError, match="swim"):
        load_config(config_model(), None, ["protocol=kademlia"])
    with pytest.raises(ConfigError, match="dsml: settings of protocol 'dsml'"):
        check(cfg("swim", "dsml.nodes=10"))
    with pytest.raises(SystemExit) as stop:
        main(["overlay", "sim", "--set", "swim.nodez=5", "--runs-dir", str(tmp_path)])
    assert stop.value.code == 2 and "nodez" in capsys.readouterr().err


def test_runs_show_lists_an_overlay_runs_metrics(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["overlay", "sim", "-q", *sum((["--set", s] for s in SMALL["swim"]), []), "--runs-dir", str(tmp_path)])
    assert stop.value.code in (0, None)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(["runs", "show", "latest", "--runs-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert stop.value.code in (0, None) and "[completed]" in out and "swim.false_deaths" in out
    assert "swim.crashes.first_dead_s (mean of 2)" in out
