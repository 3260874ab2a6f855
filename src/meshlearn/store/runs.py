"""Run directories: ``RunStore`` creates, finds and lists them; ``Run`` is one of them.

Layout of one run (``<root>/<UTC yyyymmdd-HHMMSS>-<name>/``)::

    config.toml          the fully resolved config, as passed to create_run
    run.json             id, name, status, created/updated times, versions, command, seed...
    metrics.sqlite       MetricsDB (WAL mode)
    checkpoints/         round-00000012.safetensors, newest 3 kept

``run.json`` is always rewritten atomically, so readers never see half a file.
The root defaults to ``./runs`` and can be moved with ``MESHLEARN_RUNS``.

A run marked ``running`` records its owning process (``owner``: pid, host, start time; see
``store.owner``). When that process is gone on this host the run is shown as ``died`` (with the time it
last wrote anything), so SIGKILL, power loss or a failure while recording the end never leaves a run
"running" forever. Filesystem problems (read-only root, full disk) are ``StoreError`` lines, and nothing
here deletes data it did not just write.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
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
from meshlearn.store.owner import current_owner, last_activity, owner_state

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
    died: str | None = field(default=None, compare=False)  # status "died": when the run last wrote anything


class Run:
    """One run directory: its info, config, metrics and checkpoints."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.id = self.path.name
        self._metrics: MetricsDB | None = None
        self.info: dict[str, Any] = self._read_info()
        self.notices: list[str] = []  # announcements for whoever runs it next (a checkpoint fallback)

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
        """The recorded status, or ``died`` for a ``running`` run whose owning process is gone."""
        return "died" if _has_died(self.info) else str(self.info.get("status", "unknown"))

    @property
    def died_at(self) -> str | None:
        """When a died run last wrote anything (UTC ISO), None unless the status is ``died``."""
        return last_activity(self.path) if _has_died(self.info) else None

    def set_status(self, status: str, **extra: Any) -> None:
        """Record ``status`` (and any extra fields) in ``run.json`` with one atomic rewrite."""
        info = {**self.info, **extra, "status": status, "updated": utc_now().isoformat()}
        try:
            write_json(self.path / INFO_FILE, info)
        except OSError as exc:
            raise StoreError(f"cannot record status {status!r} of run {self.id}: {_why(exc)}") from None
        self.info = info

    def claim(self) -> None:
        """Mark the run ``running``, owned by this process (refused while another live process runs it)."""
        self.check_free()
        self.set_status("running", owner=current_owner())

    def check_free(self) -> None:
        """StoreError if another process on this host is running this run right now."""
        owner = self.info.get("owner")
        if self.info.get("status") != "running" or not isinstance(owner, dict) or owner.get("pid") == os.getpid():
            return
        if owner_state(owner) == "alive":
            pid = owner["pid"]
            raise StoreError(f"run {self.id} is still running in process {pid} on {owner.get('host')}; stop it "
                             f"first (Ctrl-C there, or `kill -TERM {pid}`) or wait for it to end")

    def require_writable(self, action: str) -> None:
        """StoreError (before anything is changed) if this process cannot write the run directory."""
        paths = [self.path, *(p for p in (self.path / INFO_FILE, self.metrics_path) if p.exists())]
        if all(os.access(p, os.W_OK) for p in paths):
            return
        raise StoreError(f"cannot {action} run {self.id}: {self.path} is read-only here (a read-only filesystem or "
                         f"no write permission); copy the run directory into a writable --runs-dir and {action} "
                         "the copy")

    def finish(self, status: str, **extra: Any) -> None:
        """Close the metrics (flushed, write-ahead log checkpointed) and record the final ``status``.

        If the last metrics cannot be written (a full disk) the run is recorded ``failed`` with the reason,
        and the StoreError is raised."""
        try:
            self.close()
        except StoreError as exc:
            self.set_status("failed", **{**extra, "error": str(exc)})
            raise
        self.set_status(status, **extra)

    def take_notices(self) -> list[str]:
        """The pending announcements (see ``notices``), emptied."""
        notices, self.notices = self.notices, []
        return notices

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
        """``(round, tensors, meta)`` of the checkpoint to continue from, or None when there is none yet.

        Damaged newer checkpoints (unreadable, failing their sha256, non-finite) are skipped with a notice
        in ``self.notices``: the run falls back to an older one and redoes the rounds after it. Rather than
        let a resume restart at round 1 and drop stored rounds, StoreError (nothing changed) when every
        checkpoint is damaged, or when there is none while the metrics hold two or more rounds (resumable
        runs checkpoint every completed round) -- and when the metrics themselves are damaged.
        """
        from meshlearn.store import checkpoints

        found, skipped = checkpoints.find_checkpoint(self.checkpoint_dir)
        if found is None and skipped:
            others = f" (and {len(skipped) - 1} older, damaged too)" if len(skipped) > 1 else ""
            raise StoreError(f"run {self.id} cannot be resumed: no checkpoint is usable: {skipped[0][1]}{others}; "
                             "nothing was changed; restore a checkpoint file from a backup or start a new run")
        stored = self._stored_rounds()
        if found is None:
            if stored >= 2:
                raise StoreError(f"run {self.id} cannot be resumed: its metrics hold {stored} rounds but "
                                 f"{self.checkpoint_dir} has no checkpoint (missing or emptied); resuming would "
                                 "restart at round 1 and drop them, so nothing was changed; restore the "
                                 "checkpoints from a backup or start a new run")
            return None
        self.notices += [f"{text}; falling back to the checkpoint of round {found[0]} (the rounds after it run "
                         "again)" for _, text in skipped]
        if stored < found[0] and self.metrics_path.is_file():
            gap = f"round {found[0]}" if stored + 1 == found[0] else f"rounds {stored + 1}-{found[0]}"
            self.notices.append(f"{self.metrics_path} holds rounds up to {stored} only; the checkpoint of round "
                                f"{found[0]} continues the run, {gap} stay missing from its metrics")
        return found

    def _stored_rounds(self) -> int:
        """The highest round in the metrics (0 if none); StoreError if the database is damaged."""
        db = self.metrics_reader()
        if db is None:
            return 0
        try:
            return int(db.max_round() or 0)
        finally:
            if db is not self._metrics:
                db.close()

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Flush and close the metrics database (if it was opened)."""
        if self._metrics is not None:
            metrics, self._metrics = self._metrics, None
            metrics.close()

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
        try:
            path = self._new_dir(f"{now:%Y%m%d-%H%M%S}-{_slug(name)}")
        except OSError as exc:
            raise StoreError(f"cannot create a run in {self.root}: {_why(exc)}; point --runs-dir or "
                             f"${ENV_VAR} at a writable directory") from None
        defaults = {"name": name, "versions": package_versions(), "command": list(sys.argv)}
        record = {**defaults, **(info or {}), "id": path.name, "status": "running", "created": now.isoformat(),
                  "owner": current_owner()}
        try:
            atomic_write_text(path / CONFIG_FILE, config_toml)
            write_json(path / INFO_FILE, record)
        except OSError as exc:
            _remove_new_run(path)
            raise StoreError(f"cannot create a run in {self.root}: {_why(exc)}") from None
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


def _why(exc: OSError) -> str:
    """An OSError of a run file as a reason and a fix."""
    text = f"{exc.strerror or exc} ({exc.filename})" if exc.filename else str(exc.strerror or exc)
    if exc.errno == errno.ENOSPC:
        return f"{text}; free some disk space"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"{text}; the directory is read-only here"
    return text


def _remove_new_run(path: Path) -> None:
    """Undo a run directory this call just made (only the two files it writes first), best effort."""
    for name in (CONFIG_FILE, INFO_FILE):
        with contextlib.suppress(OSError):
            (path / name).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        path.rmdir()  # fails, harmlessly, if anything else is inside


def _has_died(info: dict[str, Any]) -> bool:
    return info.get("status") == "running" and owner_state(info.get("owner")) == "dead"


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
    died = last_activity(path) if _has_died(info) else None
    return RunInfo(path.name, path, str(info.get("name", "")), "died" if died else status, created, info, died)
