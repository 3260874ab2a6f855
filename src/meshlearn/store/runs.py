"""Run directories: ``RunStore`` creates, finds and lists them; ``Run`` is one of them.

Layout of one run (``<root>/<UTC yyyymmdd-HHMMSS>-<name>/``)::

    config.toml          the fully resolved config, as passed to create_run
    run.json             id, name, status, created/updated times, versions, command, seed...
    metrics.sqlite       MetricsDB (WAL mode)
    checkpoints/         round-00000012.safetensors, newest 3 kept

``run.json`` is always rewritten atomically, so readers never see half a file.
The root defaults to ``./runs`` and can be moved with ``MESHLEARN_RUNS``.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import platform
import re
import sys
import tomllib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshlearn.errors import StoreError
from meshlearn.store.files import atomic_write_text, read_json, utc_now, write_json
from meshlearn.store.metrics import MetricsDB

if TYPE_CHECKING:  # checkpoints (numpy, safetensors) load when a run saves or reads one
    import numpy as np

    from meshlearn.store.checkpoints import Checkpoint

__all__ = ["RunStore", "Run", "RunInfo", "ENV_VAR", "package_versions"]

ENV_VAR = "MESHLEARN_RUNS"
INFO_FILE, CONFIG_FILE, METRICS_FILE, CHECKPOINT_DIR = "run.json", "config.toml", "metrics.sqlite", "checkpoints"
_VERSIONED = ("meshlearn", "numpy", "pydantic", "safetensors", "torch")
_KEEP_CHECKPOINTS = 3


def package_versions() -> dict[str, str]:
    """Python and the installed versions of meshlearn's main dependencies."""
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _slug(name: str) -> str:
    """A run name safe as part of a directory name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "run"


@dataclass(frozen=True)
class RunInfo:
    """A run as listed by :meth:`RunStore.list_runs` (read from its ``run.json``)."""

    id: str
    path: Path
    name: str
    status: str
    created: str
    info: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


class Run:
    """One run directory: its info, config, metrics and checkpoints."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.id = self.path.name
        self._metrics: MetricsDB | None = None
        self.info: dict[str, Any] = self._read_info()

    def _read_info(self) -> dict[str, Any]:
        try:
            info = read_json(self.path / INFO_FILE)
        except FileNotFoundError:
            raise StoreError(f"{self.path} is not a run directory (no {INFO_FILE})") from None
        except (OSError, ValueError) as exc:
            raise StoreError(f"{self.path / INFO_FILE} is unreadable: {exc}") from None
        if not isinstance(info, dict):
            raise StoreError(f"{self.path / INFO_FILE} does not hold a JSON object")
        return info

    # ---------------------------------------------------------------- info/config

    @property
    def status(self) -> str:
        return str(self.info.get("status", "unknown"))

    def set_status(self, status: str, **extra: Any) -> None:
        """Record ``status`` (and any extra fields) in ``run.json`` with one atomic rewrite."""
        info = {**self.info, **extra, "status": status, "updated": utc_now().isoformat()}
        write_json(self.path / INFO_FILE, info)
        self.info = info

    def finish(self, status: str, **extra: Any) -> None:
        """Close the metrics (flushed, write-ahead log checkpointed) and record the final ``status``."""
        self.close()
        self.set_status(status, **extra)

    def reload(self) -> dict[str, Any]:
        """Re-read ``run.json`` (another process may have updated it)."""
        self.info = self._read_info()
        return self.info

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    def config_text(self) -> str:
        """The resolved config exactly as written at creation."""
        return self.config_path.read_text(encoding="utf-8")

    def config(self) -> dict[str, Any]:
        """The resolved config parsed as a dict (validate it with the experiment schema)."""
        try:
            return tomllib.loads(self.config_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise StoreError(f"{self.config_path} is missing or not valid TOML: {exc}") from None

    # -------------------------------------------------------------------- metrics

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def metrics(self) -> MetricsDB:
        """The run's metrics database, opened for writing on first use."""
        if self._metrics is None:
            self._metrics = MetricsDB(self.metrics_path)
        return self._metrics

    def metrics_reader(self) -> MetricsDB | None:
        """This run's writer if open here, else a read-only connection (None if nothing logged)."""
        if self._metrics is not None:
            return self._metrics
        return MetricsDB(self.metrics_path, readonly=True) if self.metrics_path.is_file() else None

    # ---------------------------------------------------------------- checkpoints

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINT_DIR

    def save_checkpoint(self, round: int, tensors: dict[str, np.ndarray], meta: dict[str, Any] | None = None) -> Path:
        """Atomically write the checkpoint of ``round``; keeps the newest 3."""
        from meshlearn.store import checkpoints

        return checkpoints.save_checkpoint(self.checkpoint_dir, round, tensors, meta or {}, _KEEP_CHECKPOINTS)

    def latest_checkpoint(self) -> Checkpoint | None:
        """``(round, tensors, meta)`` of the newest intact checkpoint, or None."""
        from meshlearn.store import checkpoints

        return checkpoints.latest_checkpoint(self.checkpoint_dir)

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Flush and close the metrics database (if it was opened)."""
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Run({self.id!r}, status={self.status!r})"


class RunStore:
    """The directory holding all runs (default ``./runs``, or ``$MESHLEARN_RUNS``)."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root if root is not None else os.environ.get(ENV_VAR) or "runs")

    def create_run(self, name: str, config_toml: str, info: dict[str, Any] | None = None) -> Run:
        """A new run directory with ``config.toml`` and ``run.json`` (status ``running``).

        ``info`` (the root ``seed``, git SHA, ...) is merged over the defaults: name,
        package versions, command line; ``id``, ``status`` and ``created`` are set here.
        """
        now = utc_now()
        path = self._new_dir(f"{now:%Y%m%d-%H%M%S}-{_slug(name)}")
        atomic_write_text(path / CONFIG_FILE, config_toml)
        defaults = {"name": name, "versions": package_versions(), "command": list(sys.argv)}
        record = {**defaults, **(info or {}), "id": path.name, "status": "running", "created": now.isoformat()}
        write_json(path / INFO_FILE, record)
        return Run(path)

    def _new_dir(self, base: str) -> Path:
        """Create ``root/base``, or ``base-2``, ``base-3``... if taken (atomic via mkdir)."""
        self.root.mkdir(parents=True, exist_ok=True)
        for n in itertools.count(1):
            path = self.root / (base if n == 1 else f"{base}-{n}")
            try:
                path.mkdir()
                return path
            except FileExistsError:
                continue
        raise AssertionError("unreachable")

    def list_runs(self) -> list[RunInfo]:
        """Every run under the root, newest first."""
        if not self.root.is_dir():
            return []
        runs = [_run_info(p) for p in self.root.iterdir() if (p / INFO_FILE).is_file()]
        return sorted(runs, key=lambda r: (r.created, r.id), reverse=True)

    def open_run(self, id_or_prefix: str = "latest") -> Run:
        """A run by id, unique id prefix, run name (the newest run of that name), ``"latest"`` or path."""
        if id_or_prefix == "latest":
            return self._latest()
        if "/" in id_or_prefix or os.sep in id_or_prefix:
            return Run(id_or_prefix)
        if (self.root / id_or_prefix / INFO_FILE).is_file():
            return Run(self.root / id_or_prefix)
        return Run(self._match_prefix(id_or_prefix).path)

    def _latest(self) -> Run:
        runs = self.list_runs()
        if not runs:
            raise StoreError(f"no runs in {self.root}; start one first or point {ENV_VAR} at your runs directory")
        return Run(runs[0].path)

    def _match_prefix(self, prefix: str) -> RunInfo:
        runs = self.list_runs()
        matches = [r for r in runs if r.id.startswith(prefix)] if prefix else []
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise StoreError(f"{prefix!r} matches {len(matches)} runs: {_names(matches)}; give a longer prefix")
        named = [r for r in runs if r.name == prefix]  # newest first
        if named:
            return named[0]
        recent = f"; recent runs: {_names(runs)}" if runs else ""
        raise StoreError(f"no run in {self.root} matches {prefix!r}{recent} (or use 'latest')")


def _names(runs: list[RunInfo], limit: int = 10) -> str:
    text = ", ".join(r.id for r in runs[:limit])
    return text + (f", ... ({len(runs) - limit} more)" if len(runs) > limit else "")


def _run_info(path: Path) -> RunInfo:
    """A listing entry; a damaged ``run.json`` is shown as status ``unreadable``."""
    try:
        info = read_json(path / INFO_FILE)
        info = info if isinstance(info, dict) else {}
        status = str(info.get("status", "unknown"))
    except (OSError, ValueError):
        info, status = {}, "unreadable"
    mtime = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.timezone.utc)
    created = str(info.get("created") or mtime.isoformat())
    return RunInfo(path.name, path, str(info.get("name", "")), status, created, info)
