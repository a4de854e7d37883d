"""Tracked jobs: each train / generate / evaluate is ONE MLflow run + store rows + DVC-tracked
artifacts, wired around the science functions of the other pipeline modules.

Order inside every job (so failures leave nothing half-registered):

1. the tracker is opened (an unreachable MLflow server fails here, before any store row);
2. the MLflow run is opened with all config as params;
3. the store row is claimed (generation) with the MLflow run id on it;
4. the science runs and writes its file atomically (temp file + ``os.replace``);
5. the file is ``dvc add``-ed; md5/sha256 go on the MLflow run (tags) and the sha256 and
   path on the store row, which is marked succeeded last;
6. the MLflow run is tagged with the store row ids and closed.

A job killed anywhere before (5) leaves at most a ``running`` store row without a samples
path (taken over by the next attempt) and a FAILED/RUNNING MLflow run; never a registered
file that is not complete.
"""

from __future__ import annotations

import os
from pathlib import Path

from bdgen.errors import BdgenError
from bdgen.pipeline.workspace import Workspace
from bdgen.tracking import NullTracker, Tracker


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
