"""What every tracked job runs in, and the one rule for when a command's job is tracked.

A tracked job (train, generate, evaluate, denoising) is one MLflow run + store rows +
DVC-tracked artifacts. Order inside every job, so failures leave nothing half-registered:

1. the tracker is opened (an unreachable MLflow server fails here, before any store row)
   and, once the job knows it has work, connected (:meth:`~bdgen.tracking.Tracker.connect`:
   mlflow imported, its store opened), before anything is claimed; a job whose runs the
   store has already (a result stage after a sweep) never imports mlflow;
2. all arguments are validated and the inputs loaded and hashed (once);
3. the MLflow run is opened with all config as params;
4. the store row is claimed (:mod:`bdgen.store.claims`) with the MLflow run id on it, and
   the claim's heartbeat renewed while the job works (:mod:`.heartbeat`);
5. the science runs and writes its file atomically (temp file + ``os.replace``);
6. the file is ``dvc add``-ed; md5/sha256 go on the MLflow run (tags) and the sha256 and
   path on the store row, which is marked succeeded last;
7. the MLflow run is tagged with the store row ids and closed.

A job killed anywhere before (6) leaves at most a ``running`` store row without a samples
path whose claim stops beating (taken over by the next attempt: at once on the same host,
after the lease expiry elsewhere) and a FAILED/RUNNING MLflow run; never a registered file
that is not complete. SIGTERM inside a job raises :class:`~.heartbeat.JobTerminated`, so
the job fails its row and closes its MLflow run as for any error.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bdgen.errors import BdgenError
from bdgen.pipeline.heartbeat import sigterm_as_exception
from bdgen.pipeline.progress import Progress
from bdgen.pipeline.store import open_store
from bdgen.pipeline.workspace import Workspace
from bdgen.store.api import Store
from bdgen.tracking import NullTracker, Tracker


def find_workspace() -> Workspace | None:
    """The current workspace, or None outside one."""
    try:
        return Workspace.find()
    except BdgenError:
        return None


def job_workspace(out: str | Path | None = None, *, required: bool = False) -> Workspace | None:
    """The workspace a command's job is tracked in, or None when it runs untracked.

    The one rule, for every command: a job is tracked when it runs inside a workspace and
    its outputs stay inside it (``out`` None: the workspace's own layout; else ``out`` must
    lie below the workspace root). Outside a workspace, or writing elsewhere, only files are
    written: no store rows, no MLflow run, no DVC. ``required``: outside a workspace is an
    error (a command with nowhere else to write).
    """
    ws = Workspace.find() if required else find_workspace()
    if ws is None:
        return None
    if out is not None and not Path(out).resolve().is_relative_to(ws.root):
        return None
    return ws


def tracker_for(workspace: Workspace | None, no_mlflow: bool = False) -> Tracker:
    """The tracker a job uses: nothing with ``--no-mlflow``; ``$MLFLOW_TRACKING_URI`` if set;
    else the workspace's SQLite store. Checks reachability now (fails fast)."""
    if no_mlflow:
        return NullTracker()
    if workspace is None and not os.environ.get("MLFLOW_TRACKING_URI"):
        raise BdgenError("no MLflow tracking store: run inside a bdgen workspace (bdgen init), "
                         "set MLFLOW_TRACKING_URI, or use --no-mlflow")
    root = workspace.root if workspace is not None else Path.cwd()
    return Tracker.for_workspace(root)


def optional_tracker(workspace: Workspace | None, no_mlflow: bool = False) -> Tracker:
    """:func:`tracker_for` where MLflow is a bonus: with no workspace and no
    ``$MLFLOW_TRACKING_URI`` nothing is logged instead of an error."""
    if workspace is None and not os.environ.get("MLFLOW_TRACKING_URI"):
        return NullTracker()
    return tracker_for(workspace, no_mlflow)


def workspace_relative(ws: Workspace, path: str | Path) -> str:
    """``path`` relative to the workspace root (as the store records it), if inside it."""
    try:
        return Path(path).resolve().relative_to(ws.root).as_posix()
    except ValueError:
        return str(path)


@dataclass
class JobContext:
    """A tracked job's workspace, results store and tracker (open them with :meth:`open`)."""

    workspace: Workspace
    store: Store
    tracker: Tracker
    _bars: list[Progress] = field(default_factory=list, repr=False)

    @classmethod
    @contextmanager
    def open(cls, workspace: Workspace, no_mlflow: bool = False) -> Iterator[JobContext]:
        """The tracker first (an unreachable server fails before the store is touched),
        then the store; the store is closed when the job ends."""
        tracker = tracker_for(workspace, no_mlflow)
        store = open_store(workspace=workspace)
        ctx = cls(workspace, store, tracker)
        try:
            with sigterm_as_exception():
                yield ctx
        finally:
            for bar in ctx._bars:
                bar.close()
            store.close()

    def progress(self, total: int | None, desc: str, unit: str = "item") -> Progress:
        """A :class:`~bdgen.pipeline.progress.Progress` closed when the job ends."""
        bar = Progress(total, desc, unit)
        self._bars.append(bar)
        return bar

    def rel(self, path: str | Path) -> str:
        return workspace_relative(self.workspace, path)

    def inside(self, path: str | Path) -> bool:
        return Path(path).resolve().is_relative_to(self.workspace.root)
