"""What the study kinds (``overlay``, ``split``) share: a config built from a study registry, one runner.

A study kind's config names its study in one field (``protocol`` / ``study``) and has one section per
registered study; ``study_fields`` builds those fields for ``create_model``. ``PreparedStudy`` runs the
chosen study once and stores its results: scalars as run-level metrics, row tables as metric series
indexed by row (``<study>.<key>``), and the whole result in ``results.json``. ``summary`` and
``headline`` are what ``runs show`` and ``runs compare`` print for such runs.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from pydantic import Field, field_validator

from meshlearn.experiment.kinds import Outcome, RunContext
from meshlearn.registry import Registry
from meshlearn.study import Study, flatten_results

__all__ = ["RESULTS_FILE", "STEPS", "PreparedStudy", "headline", "store_results", "study_fields", "summary"]

RESULTS_FILE = "results.json"
STEPS = 1000  # progress is reported in thousandths of the study
HEADLINE_KEYS = 8  # at most this many numbers per study in `runs compare`


def study_fields(registry: Registry[Study], selector: str, shared: dict[str, Any] | None = None) -> dict[str, Any]:
    """``create_model`` fields: ``selector`` (validated against ``registry``) and one section per study."""
    def known(cls, value: str) -> str:
        if value not in registry:
            raise ValueError(f"unknown {registry.kind.removesuffix('_studies')} {selector} {value!r} "
                             f"(valid: {', '.join(registry.names())})")
        return value

    listing = "; ".join(f"{name}: {study.summary}" for name, study in registry.items())
    fields = dict(shared or {})
    for _, s in registry.items():
        fields.setdefault(s.key, (s.settings, Field(default_factory=s.settings,
                                                    description=f"{s.summary} ({selector} = {s.name})")))
    fields[selector] = (str, Field(default_factory=registry.default, description=f"the study ({listing})"))
    fields["__validators__"] = {"_known": field_validator(selector)(classmethod(known))}
    return fields


class PreparedStudy:
    """One study ready to run (a kind's ``Prepared``): ``context`` gives it the kind-specific keyword arguments."""

    total = STEPS

    def __init__(self, cfg: Any, study: Study, selector: str, context: Callable[[Any], dict] = lambda run: {}):
        self.cfg, self.study, self.selector, self.context = cfg, study, selector, context
        if study.check is not None:  # files to read and directories to write, before a run exists
            study.check(getattr(cfg, study.key), **context(None))

    def run(self, ctx: RunContext) -> Outcome:
        results = self.study.run(getattr(self.cfg, self.study.key), seed=self.cfg.seed,
                                 progress=lambda done: ctx.progress(int(STEPS * done)), **self.context(ctx.run))
        store_results(ctx.run, self.study.name, results)
        return Outcome("completed", {self.selector: self.study.name})

    def close(self) -> None:
        pass


def store_results(run: Any, prefix: str, results: dict) -> None:
    """The results as metrics ``<prefix>.<key>`` (row tables indexed by row), and whole in results.json."""
    run.metrics.log_many(dict(key=f"{prefix}.{k}", value=v, round=r) for k, v, r in flatten_results(results))
    run.metrics.flush()
    (run.path / RESULTS_FILE).write_text(json.dumps(results, indent=1, default=str) + "\n", encoding="utf-8")


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() and abs(value) >= 1 else f"{value:.6g}"


def summary(run: Any) -> list[tuple[str, str]]:
    """Every run-level scalar, and for row series their count and mean."""
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


def headline(run: Any, target: float) -> dict[str, Any]:
    """The study's top-level scalar results (for ``runs compare``; target accuracies do not apply)."""
    db = run.metrics_reader()
    top = [key for key in (db.keys() if db is not None else []) if key.count(".") == 1]
    rows = [row for key in top for row in db.rows(key) if row.round is None]
    return {row.key: row.value for row in rows[:HEADLINE_KEYS]}
