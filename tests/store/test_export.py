"""export_csv / export_json write files that parse back with the right values."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from meshlearn.store import Run, RunStore, export_csv, export_json

CONFIG = 'seed = 1\nhorizon = inf\n[train]\nrounds = 3\n'


def make_run(tmp_path: Path) -> Run:
    run = RunStore(tmp_path / "runs").create_run("exp", CONFIG, {"seed": 1})
    m = run.metrics
    m.log("loss", 1.0, round=0)
    m.log("acc", 0.5, round=0)
    m.log("loss", 0.8, round=1)
    m.log("loss", 0.7, round=1)  # last value wins in the table
    m.log("loss", 9.0, round=1, node="n1")
    m.log("loss", float("nan"), round=2)
    return run


def test_export_csv_round_table(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    path = export_csv(run)
    assert path == run.path / "metrics.csv"
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["round", "acc", "loss"]
    assert rows == [
        {"round": "0", "acc": "0.5", "loss": "1"},  # whole numbers without a trailing .0
        {"round": "1", "acc": "", "loss": "0.7"},
        {"round": "2", "acc": "", "loss": ""},
    ]


def test_export_csv_selected_keys_custom_path_from_other_process_view(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    run.close()  # flushes; the export below opens its own read-only connection
    reopened = RunStore(tmp_path / "runs").open_run("latest")
    out = export_csv(reopened, tmp_path / "out.csv", keys=["loss"])
    with open(out, newline="") as fh:
        assert list(csv.reader(fh)) == [["round", "loss"], ["0", "1"], ["1", "0.7"], ["2", ""]]


def test_export_json(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    run.set_status("finished")
    path = export_json(run)
    assert path == run.path / "export.json"
    data = json.loads(path.read_text())
    assert data["id"] == run.id and data["info"]["status"] == "finished"
    assert data["config"] == {"seed": 1, "horizon": "inf", "train": {"rounds": 3}}
    assert sorted(data["metrics"]) == ["acc", "loss"]
    loss = data["metrics"]["loss"]
    assert [(r["round"], r["node"], r["value"]) for r in loss] == [
        (0, None, 1.0),
        (1, None, 0.8),
        (1, None, 0.7),
        (1, "n1", 9.0),
        (2, None, None),
    ]
    assert set(loss[0]) == {"round", "node", "t_sim", "t_wall", "value"}


def test_exports_of_run_without_metrics(tmp_path: Path) -> None:
    run = RunStore(tmp_path).create_run("empty", CONFIG)
    with open(export_csv(run), newline="") as fh:
        assert list(csv.reader(fh)) == [["round"]]
    assert json.loads(export_json(run).read_text())["metrics"] == {}
