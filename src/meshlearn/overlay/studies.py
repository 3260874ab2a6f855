"""The registry of overlay studies (``protocol = "..."`` in an overlay experiment file).

Each driver registers its study here (``swim/sim.py``, ``chord/sim.py``, ``dsml/sim.py``); the
registry discovers every module of ``meshlearn.overlay`` on first lookup, so a new overlay study is
one new driver module. The ``overlay`` experiment kind (``meshlearn.experiment.overlay``) runs them.
"""

from __future__ import annotations

from meshlearn.registry import Registry
from meshlearn.study import Study

__all__ = ["STUDIES", "register"]

STUDIES: Registry[Study] = Registry("overlay_studies", discover="meshlearn.overlay")


def register(study: Study) -> Study:
    return STUDIES.register(study.name, study)
