"""The ``overlay`` experiment kind: one simulated overlay study (``protocol``) into the run store.

    kind = "overlay"
    name = "swim-1000"
    seed = 0
    protocol = "swim"          # a study registered in meshlearn.overlay.studies

    [swim]
    nodes = 1000
    crash_fraction = 0.01

The study's results are stored as metrics: scalars as run-level values, row tables (one row per
crash / round / distance) as metric series indexed by row, so ``meshlearn runs show / export /
compare`` work on them. ``meshlearn overlay sim`` is a shortcut that builds the same config.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from meshlearn.errors import ConfigError
from meshlearn.experiment.kinds import ExperimentKind, register
from meshlearn.experiment.studies import PreparedStudy, headline, study_fields, summary
from meshlearn.overlay.studies import STUDIES
from meshlearn.registry import per_contents
from meshlearn.study import Study

__all__ = ["OverlayExperiment", "check", "config_model", "study_of"]


class OverlayExperiment(BaseModel):
    """A simulated overlay experiment (techniques-mizutani.md §1, §2, §5)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["overlay"] = Field("overlay", description="experiment kind: overlay (simulated overlay studies)")
    name: str = Field("overlay", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="run name in the run store")
    seed: int = Field(0, ge=0, description="root seed: same seed, same results")


@per_contents(lambda: STUDIES)
def config_model() -> type[OverlayExperiment]:
    """The overlay experiment model: ``protocol`` plus one section per registered study."""
    return create_model("OverlayExperiment", __base__=OverlayExperiment, __doc__=OverlayExperiment.__doc__,
                        **study_fields(STUDIES, "protocol"))


def study_of(cfg: Any) -> Study:
    return STUDIES.get(cfg.protocol)


def check(cfg: Any) -> None:
    """Another protocol's section set to non-default values would be ignored: an error naming it."""
    chosen = study_of(cfg)
    for _, study in STUDIES.items():
        if study.key != chosen.key and getattr(cfg, study.key) != study.settings():
            raise ConfigError(study.key, f"settings of protocol {study.name!r}, but protocol = {cfg.protocol!r}: "
                              "they would be ignored; drop them or change protocol")


register(ExperimentKind(
    "overlay", "simulated overlay studies: SWIM membership, failure propagation, skip-mesh aggregation",
    config=config_model, prepare=lambda cfg, state: PreparedStudy(cfg, study_of(cfg), "protocol"),
    describe=lambda cfg: {"protocol": cfg.protocol}, summary=summary, headline=headline, check=check))
