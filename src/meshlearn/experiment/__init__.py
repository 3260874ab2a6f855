"""Experiments: one model for every kind of run, and the small Python API that runs them.

    from meshlearn.experiment import load_experiment, run_experiment
    from meshlearn.store import RunStore

    config = load_experiment("quickstart", ["fl.rounds=5"])        # a TOML file or preset, any kind
    run = run_experiment(config, RunStore("runs"), progress=lambda p: print(p.step, p.metrics))
    print(run.info["status"], run.info["final_accuracy"])

What lives here: ``kinds.py`` (the ``ExperimentKind`` registry), ``lifecycle.py`` (the one run
lifecycle), ``files.py`` (files and presets → configs), and one module or package per kind
(``fl/``, ``overlay.py``, ``split.py``), each registering itself.
"""

from meshlearn.experiment.files import load_experiment, parse_experiment, preset_names, resolve_config_path
from meshlearn.experiment.kinds import KINDS, ExperimentKind, Outcome, kind_named
from meshlearn.experiment.lifecycle import Progress, run_experiment

__all__ = ["KINDS", "ExperimentKind", "Outcome", "Progress", "kind_named", "load_experiment", "parse_experiment",
           "preset_names", "resolve_config_path", "run_experiment"]
