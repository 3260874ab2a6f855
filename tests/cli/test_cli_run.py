"""`meshlearn run` into a run store, then `runs list | show | export` on what it stored."""

import csv
import json


def test_run_prints_summary(stored_run):
    runs, result = stored_run
    assert "test accuracy" in result.out
    assert "rounds" in result.out
    assert "bytes up (total)" in result.out
    # --runs-dir wins over $MESHLEARN_RUNS (which pointed elsewhere)
    assert [p.name for p in runs.iterdir()] and str(runs) in result.out


def test_runs_list_shows_the_run(cli, stored_run):
    runs, _ = stored_run
    run_id = next(runs.iterdir()).name
    result = cli("runs", "list", "--runs-dir", runs)
    assert result.code == 0, result.err
    assert run_id in result.out
    assert "completed" in result.out


def test_runs_list_empty_says_where_it_looked(cli, workdir):
    result = cli("runs", "list", "--runs-dir", workdir / "none")
    assert result.code == 0
    assert "no runs in" in result.out and "meshlearn demo" in result.out


def test_runs_show_latest_prints_every_round(cli, stored_run):
    runs, _ = stored_run
    result = cli("runs", "show", "latest", "--runs-dir", runs)
    assert result.code == 0, result.err
    rounds = [line.split("│")[1].strip() for line in result.out.splitlines()
              if line.startswith("│") and line.split("│")[1].strip().isdigit()]
    assert rounds == ["1", "2"]
    assert "config.toml" in result.out and "metrics.sqlite" in result.out


def test_runs_export_csv(cli, stored_run, workdir):
    runs, _ = stored_run
    out = workdir / "m.csv"
    result = cli("runs", "export", "latest", "--format", "csv", "--out", out, "--runs-dir", runs)
    assert result.code == 0, result.err
    assert str(out) in result.out.replace("\n", "")
    rows = list(csv.DictReader(out.open()))
    assert [int(r["round"]) for r in rows] == [1, 2]
    assert all(0.0 <= float(r["accuracy"]) <= 1.0 for r in rows)


def test_runs_export_json_default_location(cli, stored_run):
    runs, _ = stored_run
    result = cli("runs", "export", "latest", "--format", "json", "--runs-dir", runs)
    assert result.code == 0, result.err
    path = next(runs.iterdir()) / "export.json"
    data = json.loads(path.read_text())
    assert data["config"]["fl"]["rounds"] == 2
    assert [m["round"] for m in data["metrics"]["accuracy"]] == [1, 2]


def test_runs_export_unknown_format(cli_proc, stored_run, usage_error):
    runs, _ = stored_run
    result = cli_proc("runs", "export", "--format", "xml", "--runs-dir", runs)
    usage_error(result, "--format", "xml", "csv", "json")


def test_runs_export_unwritable_out(cli, stored_run, workdir, usage_error):
    runs, _ = stored_run
    result = cli("runs", "export", "latest", "--out", workdir / "no" / "such" / "dir.csv", "--runs-dir", runs)
    usage_error(result, "--out", "directory exists")


def test_runs_show_unknown_run_is_a_store_error(cli_proc, stored_run, clean_error):
    runs, _ = stored_run
    result = cli_proc("runs", "show", "nonexistent", "--runs-dir", runs)
    assert result.code == 1, result.err
    clean_error(result, "nonexistent", "latest")


def test_resume_without_runs_says_how_to_start_one(cli, workdir, clean_error):
    result = cli("run", "--resume", "latest", "--runs-dir", workdir / "empty")
    assert result.code == 1
    clean_error(result, "no runs in", "MESHLEARN_RUNS")
