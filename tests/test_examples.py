"""The documented examples keep working."""

import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(60)
def test_ping_pong_example_runs_in_both_runtimes(capsys):
    runpy.run_path(str(ROOT / "examples" / "ping_pong.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "simulated:" in out and "real UDP:  20/20 pongs" in out


def test_example_configs_validate_and_pass_their_kinds_checks():
    from meshlearn.experiment import kind_named, load_experiment

    paths = sorted((ROOT / "examples").rglob("*.toml"))
    assert len(paths) >= 5
    for path in paths:
        cfg = load_experiment(path)
        kind_named(cfg.kind).check(cfg)
        assert cfg.name


def test_overlay_example_configs_name_their_protocol():
    from meshlearn.experiment import load_experiment

    paths = sorted((ROOT / "examples" / "overlay").glob("*.toml"))
    assert {p.stem for p in paths} == {"swim", "propagation", "dsml"}
    for path in paths:
        assert load_experiment(path).protocol == path.stem


@pytest.mark.timeout(120)
def test_the_custom_kind_walkthrough_runs(capsys):
    """docs/guide.md "Adding an experiment kind": the lossprobe kind registers, validates, runs and stores."""
    from meshlearn.experiment import KINDS

    runpy.run_path(str(ROOT / "examples" / "custom_kind.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "lossprobe: completed" in out and "measured 0.1" in out
    assert "lossprobe" in KINDS
