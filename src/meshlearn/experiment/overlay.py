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

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from meshlearn.errors import ConfigError
from meshlearn.experiment.kinds import ExperimentKind, Outcome, RunContext, register
from meshlearn.overlay.studies import STUDIES
from meshlearn.study import Study, flatten_results

__all__ = ["OverlayExperiment", "RESULTS_FILE", "config_model", "scalar_summary", "store_results"]

STEPS = 1000  # progress is reported in thousandths of the simulated duration


class OverlayExperiment(BaseModel):
    """A simulated overlay experiment (techniques-mizutani.md §1, §2, §5)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["overlay"] = Field("overlay", description="experiment kind: overlay (simulated overlay studies)")
    name: str = Field("overlay", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="run name in the run store")
    seed: int = Field(0, ge=0, description="root seed: same seed, same results")


def _default_protocol() -> str:
    return STUDIES.default()


def _known(cls, value: str) -> str:
    if value not in STUDIES:
        raise ValueError(f"unknown overlay protocol {value!r} (valid: {', '.join(STUDIES.names())})")
    return value


_BUILT: dict[tuple[str, ...], type[OverlayExperiment]] = {}


def config_model() -> type[OverlayExperiment]:
    """The overlay experiment model: ``protocol`` plus one section per registered study."""
    names = tuple(STUDIES.names())
    if names not in _BUILT:
        listing = "; ".join(f"{name}: {study.summary}" for name, study in STUDIES.items())
        sections = {s.key: (s.settings, Field(default_factory=s.settings, description=f"{s.summary} (protocol = "
                                              f"{s.name})")) for _, s in STUDIES.items()}
        _BUILT[names] = create_model(
            "OverlayExperiment", __base__=OverlayExperiment, __doc__=OverlayExperiment.__doc__,
            __validators__={"_known": field_validator("protocol")(classmethod(_known))},
            protocol=(str, Field(default_factory=_default_protocol, description=f"the study ({listing})")),
            **sections)
    return _BUILT[names]


def study_of(cfg: Any) -> Study:
    return STUDIES.get(cfg.protocol)


def check(cfg: Any) -> None:
    """Another protocol's section set to non-default values would be ignored: an error naming it."""
    chosen = study_of(cfg)
    for _, study in STUDIES.items():
        if study.key != chosen.key and getattr(cfg, study.key) != study.settings():
            raise ConfigError(study.key, f"settings of protocol {study.name!r}, but protocol = {cfg.protocol!r}: "
                              "they would be ignored; drop them or change protocol")


class PreparedStudy:
    """A study ready to run once (the kind's ``Prepared``); nothing to build ahead, nothing to free."""

    total = STEPS

    def __init__(self, cfg: Any, state: Any = None):
        self.cfg, self.study = cfg, study_of(cfg)

    def run(self, ctx: RunContext) -> Outcome:
        settings = getattr(self.cfg, self.study.key)
        results = self.study.run(settings, seed=self.cfg.seed, progress=lambda done: ctx.progress(int(STEPS * done)))
        store_results(ctx.run, self.study.name, results)
        return Outcome("completed", {"protocol": self.study.name})

    def close(self) -> None:
        pass


RESULTS_FILE = "results.json"


def store_results(run: Any, prefix: str, results: dict) -> None:
    """The results as metrics ``<prefix>.<key>`` (row tables indexed by row), and whole in results.json."""
    run.metrics.log_many(dict(key=f"{prefix}.{k}", value=v, round=r) for k, v, r in flatten_results(results))
    run.metrics.flush()
    (run.path / RESULTS_FILE).write_text(json.dumps(results, indent=1, default=str) + "\n", encoding="utf-8")


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() and abs(value) >= 1 else f"{value:.6g}"


def scalar_summary(run: Any) -> list[tuple[str, str]]:
    """Every run-level scalar, and for row series their count and mean (studies of any kind)."""
    db = run.metrics_reader()
    out = []
    for key in db.keys() if db is not None else []:
        rows = db.rows(key)
        scalars = [row.value for row in rows if row.round is None]
        if scalars:
            out.append((key, _fmt(scalars[-1])))
        elif rows:
            values = [row.value for row in rows]
            out.append((f"{key} (mean of {len(values)})", _fmt(sum(values) / len(values))))
    return out


HEADLINE_KEYS = 8  # at most this many numbers per study in `runs compare`


def scalar_headline(run: Any, target: float) -> dict[str, Any]:
    """The study's top-level scalar results (for ``runs compare``; target accuracies do not apply)."""
    db = run.metrics_reader()
    top = [key for key in (db.keys() if db is not None else []) if key.count(".") == 1]
    rows = [row for key in top for row in db.rows(key) if row.round is None]
    return {row.key: row.value for row in rows[:HEADLINE_KEYS]}


register(ExperimentKind(
    "overlay", "simulated overlay studies: SWIM membership, failure propagation, skip-mesh aggregation",
    config=config_model, prepare=PreparedStudy, describe=lambda cfg: {"protocol": cfg.protocol},
    summary=scalar_summary, headline=scalar_headline, check=check))
