"""Run tracking: MLflow runs and DVC-tracked artifacts, behind one small interface.

The only package that imports mlflow or dvc (both lazily, so importing this is cheap).
"""

from bdgen.tracking.artifacts import ArtifactRef, dvc_file, init_dvc, track
from bdgen.tracking.mlflow_tracker import (
    NullRun,
    NullTracker,
    TrackedRun,
    Tracker,
    check_reachable,
    create_store,
    default_tracking_uri,
    experiment_name,
)

__all__ = [
    "ArtifactRef", "NullRun", "NullTracker", "TrackedRun", "Tracker", "check_reachable",
    "create_store", "default_tracking_uri", "dvc_file", "experiment_name", "init_dvc", "track",
]
