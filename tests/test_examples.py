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


def test_example_configs_validate():
    from meshlearn.config import load_config
    from meshlearn.experiment.schema import ExperimentConfig

    for path in (ROOT / "examples").glob("*.toml"):
        cfg = load_config(ExperimentConfig, path)
        assert cfg.name


def test_overlay_example_configs_validate():
    from meshlearn.config import load_config
    from meshlearn.overlay.experiment import OverlayExperiment

    paths = sorted((ROOT / "examples" / "overlay").glob("*.toml"))
    assert {p.stem for p in paths} == {"swim", "propagation", "dsml"}
    for path in paths:
        assert load_config(OverlayExperiment, path).protocol == path.stem
