"""The one run lifecycle: every kind of experiment, simulated or on real processes, goes through it.

    run_experiment(config, store)           a new run of any kind
    run_experiment(None, store, resume=id)  continue a stored run (overrides checked against the kind)

Order, so that a mistake never leaves a run folder behind:

    validate (the kind's config model)  →  kind.check  →  kind.prepare (data, nodes, executor)
    →  create the run directory (resolved config.toml, run.json, run.log)  →  running  →  prepared.run
    →  completed | stopped (with the kind's info)  /  interrupted (Ctrl-C or SIGTERM: resumable)  /  failed

While it runs, the run records its owning process (``Run.claim``), so a run whose process was killed
shows as ``died`` instead of "running" forever; a resume checks first that no live process owns the
run and that its directory is writable, and announces any checkpoint fallback as a warning.

``open_run_for_resume`` and ``running`` are the pieces real deployments (``serve``, ``peer``)
reuse; ``run_experiment`` is the small Python API the CLI and the web UI call.
"""

from __future__ import annotations

import contextlib
import logging
import platform
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

from pydantic import BaseModel

from meshlearn.config import apply_overrides, diff_from_default, to_toml, validate_config
from meshlearn.errors import ConfigError, StoreError
from meshlearn.experiment.kinds import ExperimentKind, Outcome, Prepared, kind_named
from meshlearn.store import Run, RunStore
from meshlearn.store.files import atomic_write_text

__all__ = ["Progress", "run_experiment", "open_run_for_resume", "running", "create_run", "kind_of_config",
           "LOG_FILE", "Terminated"]

LOG_FILE = "run.log"
_log = logging.getLogger("meshlearn")


@dataclass(frozen=True)
class Progress:
    """One progress report: ``step`` of ``total`` done, the step's metrics, a message for warnings."""

    run: Run
    step: int
    total: int | None
    metrics: Mapping[str, float]
    message: str | None = None


def kind_of_config(config: BaseModel) -> ExperimentKind:
    """The kind a validated config belongs to (its ``kind`` field)."""
    return kind_named(getattr(config, "kind", None))


class _Context:
    """The RunContext a prepared experiment sees: progress to the caller, lines to run.log."""

    def __init__(self, run: Run, total: int | None, progress: Callable[[Progress], None] | None):
        self.run, self.total, self._progress = run, total, progress
        self.warnings: list[str] = []

    def progress(self, step: int, metrics: Mapping[str, float] | None = None) -> None:
        shown = ", ".join(f"{k} {_short(v)}" for k, v in (metrics or {}).items())
        _log.info("step %d%s%s", step, f"/{self.total}" if self.total else "", f": {shown}" if shown else "")
        if self._progress is not None:
            self._progress(Progress(self.run, step, self.total, dict(metrics or {})))

    def log(self, text: str, *, level: str = "info") -> None:
        _log.log(logging.getLevelName(level.upper()), "%s", text)
        if level == "warning":
            self.warnings.append(text)
            if self._progress is not None:
                self._progress(Progress(self.run, -1, self.total, {}, message=text))


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def run_info(config: BaseModel, kind: ExperimentKind, **extra: Any) -> dict[str, Any]:
    """What run.json records beside the versions: kind, what ran, seed, command line."""
    return {"kind": kind.name, **kind.describe(config), "seed": getattr(config, "seed", None),
            "python": platform.python_version(), "argv": sys.argv, **extra}


def create_run(store: RunStore, config: BaseModel, kind: ExperimentKind, **info: Any) -> Run:
    """A new run directory holding the resolved config and run.json (status ``running``)."""
    return store.create_run(getattr(config, "name", kind.name), to_toml(config), run_info(config, kind, **info))


class Terminated(KeyboardInterrupt):
    """SIGTERM while a run is running (main thread): the run ends like Ctrl-C, ``interrupted`` and resumable."""


@contextlib.contextmanager
def running(run: Run, ctx: _Context | None = None) -> Iterator[None]:
    """Claim ``run`` for this process, keep its log in run.log, and record how it ended if it raises.

    The run's pending notices (a checkpoint fallback) are logged as warnings (and reported through
    ``ctx``). SIGTERM is handled like Ctrl-C. If recording the end fails too (a full disk), that is
    logged and the original error propagates; the run then shows as ``died`` once this process is gone.
    """
    handler = _log_to(run.path / LOG_FILE)
    try:
        run.claim()
        for text in run.take_notices():
            if ctx is not None:
                ctx.log(text, level="warning")
            else:
                _log.warning("%s", text)
        with _sigterm_interrupts():
            try:
                yield
            except KeyboardInterrupt as stop:
                how = "terminated (SIGTERM)" if isinstance(stop, Terminated) else "interrupted"
                _record_end(run, "interrupted", **({"signal": "SIGTERM"} if isinstance(stop, Terminated) else {}))
                command = "serve" if run.info.get("mode") == "serve" else "run"
                _log.warning("%s: completed steps are saved; resume with `meshlearn %s --resume %s`", how, command,
                             run.id)
                raise
            except BaseException as exc:
                _record_end(run, "failed", error=f"{type(exc).__name__}: {exc}")
                _log.error("failed: %s", exc)
                raise
    finally:
        _log.removeHandler(handler)
        handler.close()


def _record_end(run: Run, status: str, **extra: Any) -> None:
    """``run.finish`` on the way out of an error: its own failure is logged, never raised over the first."""
    try:
        run.finish(status, **extra)
    except StoreError as exc:
        _log.error("could not record that run %s ended %s: %s", run.id, status, exc)


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """Raise ``Terminated`` on the first SIGTERM (later ones are ignored until the run has ended)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = []

    def on_sigterm(signum: int, frame: Any) -> None:
        if not fired:
            fired.append(signum)
            raise Terminated("terminated by SIGTERM")

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _log_to(path: Path) -> logging.Handler:
    try:
        handler = logging.FileHandler(path, encoding="utf-8")
    except OSError as exc:
        raise StoreError(f"cannot write {path}: {exc.strerror or exc}; is the run directory writable?") from None
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.setLevel(logging.INFO)
    _log.addHandler(handler)
    if _log.level == logging.NOTSET or _log.level > logging.INFO:
        _log.setLevel(logging.INFO)
    return handler


def open_run_for_resume(store: RunStore, resume: str, overrides: Iterable[str] = ()) -> tuple[Run, BaseModel, Any]:
    """The stored run, its config with the safe ``overrides`` applied, and the state to continue from."""
    run = store.open_run(resume)
    raw = run.config()
    kind = kind_named(raw.get("kind"))
    config = validate_config(kind.config(), raw, source=str(run.config_path))
    if kind.resume is None or not kind.resumable(config):
        what = ", ".join(f"{k} {v}" for k, v in kind.describe(config).items())
        raise StoreError(f"runs of {what or kind.name} cannot be resumed yet; start a new run")
    config = _with_overrides(kind, config, list(overrides), str(run.config_path))
    run.check_free()
    run.require_writable("resume")
    return run, config, kind.resume(run, config)


def _with_overrides(kind: ExperimentKind, config: BaseModel, overrides: list[str], source: str) -> BaseModel:
    """Apply ``--set`` overrides on resume; keys outside ``kind.resume_keys`` are refused with the reason."""
    if not overrides:
        return config
    data = apply_overrides(config.model_dump(mode="json"), overrides)
    updated = validate_config(type(config), data, source=source, overrides=overrides)
    changed = _changed_keys(diff_from_default(updated, config))
    unsafe = [key for key in changed if key not in kind.resume_keys]
    if unsafe:
        raise ConfigError(unsafe[0], f"cannot change when resuming (the stored rounds ran with the old value); "
                          f"keys a resume may change: {', '.join(kind.resume_keys) or 'none'}")
    return updated


def _changed_keys(diff: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in diff.items():
        if isinstance(value, Mapping) and value:
            keys += _changed_keys(value, f"{prefix}{key}.")
        else:
            keys.append(prefix + key)
    return keys


def run_experiment(config: BaseModel | None, store: RunStore, *, resume: str | None = None,
                   overrides: Iterable[str] = (), progress: Callable[[Progress], None] | None = None) -> Run:
    """Run ``config`` (any kind) into ``store``, or continue the stored run ``resume``; returns the Run.

    ``progress`` receives a ``Progress`` after every step (round, epoch, ...) and for every warning.
    Config problems raise ConfigError before any run directory exists; Ctrl-C leaves the run
    ``interrupted`` (resumable where the kind resumes); the final status is in ``run.info``.
    """
    if (config is None) == (resume is None):
        raise ConfigError("", "give a config or resume=RUN_ID, not both")
    run, state = None, None
    if resume is not None:
        run, config, state = open_run_for_resume(store, resume, overrides)
    kind = kind_of_config(config)
    kind.check(config)
    prepared = kind.prepare(config, state)
    try:
        if run is None:
            run = create_run(store, config, kind)
        elif list(overrides):
            atomic_write_text(run.config_path, to_toml(config))
        _execute(run, prepared, progress)
    finally:
        prepared.close()
    return run


def _execute(run: Run, prepared: Prepared, progress: Callable[[Progress], None] | None) -> Outcome:
    ctx = _Context(run, prepared.total, progress)
    wall0 = time.perf_counter()
    with running(run, ctx):
        outcome = prepared.run(ctx)
    run.finish(outcome.status, wall_s=round(time.perf_counter() - wall0, 3), **outcome.info,
               **({"warnings": ctx.warnings[-20:]} if ctx.warnings else {}))
    if outcome.error:
        raise StoreError(outcome.error)
    return outcome
