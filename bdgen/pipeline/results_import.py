"""The import job of ``bdgen import-legacy``: result files into the store, and their
per-seed metrics into MLflow as one run per (method, seed), idempotently.

Runs go to the experiment ``bdgen/legacy-graph2plan`` (the original models were trained on
Graph2Plan/RPLAN, whose prepared dataset id is not known), tagged
``bdgen.kind=legacy-import`` and ``bdgen.legacy.source_sha256``. Before a run is created
MLflow is searched for one with the same source hash and seed, so re-importing creates no
duplicates; the store rows get the MLflow run id.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bdgen.eval.results_json import UPGRADED_FLAG, as_format_2
from bdgen.pipeline.context import find_workspace, optional_tracker
from bdgen.pipeline.store import open_store
from bdgen.store.api import FileReport, Store, normalise_metrics
from bdgen.tracking import Tracker
from bdgen.util.faults import fault_point

IMPORT_EXPERIMENT = "bdgen/legacy-graph2plan"
KIND = "legacy-import"


@dataclass
class ImportSummary:
    """One report per file, and the MLflow side (``tracking_uri`` empty: not logged)."""

    reports: list[FileReport]
    mlflow_runs_created: int = 0
    tracking_uri: str = ""

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.reports)


def import_results(paths: Sequence[str | Path], schedule: str | None = None,
                   db: str | None = None, no_mlflow: bool = False) -> ImportSummary:
    """Import result files (files or directory trees) into the store ``db`` (default: see
    :func:`~bdgen.pipeline.store.store_url`) and, with a workspace or
    ``$MLFLOW_TRACKING_URI``, log them to MLflow. A malformed file is reported, not raised."""
    tracker = optional_tracker(find_workspace(), no_mlflow)  # unreachable: fails before writes
    with open_store(db) as store:
        reports = store.import_result_files(paths, schedule)
        if not tracker.enabled:
            return ImportSummary(reports)
        created = log_imported_runs(store, tracker, reports)
    return ImportSummary(reports, created, tracker.uri)


def log_imported_runs(store: Store, tracker: Tracker, reports: Iterable[FileReport]) -> int:
    """MLflow runs for every seed of every imported (added or skipped) file; returns how many
    runs were created."""
    created = 0
    for report in reports:
        fault_point("import.file")  # the store has every file; MLflow has files < k
        if report.status == "failed" or not tracker.enabled:
            continue
        raw = Path(report.path).read_bytes()
        sha = hashlib.sha256(raw).hexdigest()
        data = as_format_2(json.loads(raw))  # a v1 file: its one seed, as imported
        per_seed = {int(k): v for k, v in data["per_seed"].items()}
        upgraded = {"bdgen.legacy.upgraded_from_v1": "true"} if data.get(UPGRADED_FLAG) else {}
        for row in store.imported_runs(sha):
            tags = {"bdgen.kind": KIND, "bdgen.legacy.source_sha256": sha,
                    "bdgen.seed": str(row.seed)}
            found = tracker.find_runs(IMPORT_EXPERIMENT, tags)
            if found:
                run_id = found[0]
            else:
                params = {"config": data.get("config", {}), "method": row.method,
                          "model_id": row.model_id, "seed": row.seed}
                with tracker.open_run(
                        KIND, f"{row.model_id}/{row.method}/{row.seed}", IMPORT_EXPERIMENT,
                        params=params,
                        tags={**tags, "bdgen.model_id": row.model_id, "bdgen.method": row.method,
                              "bdgen.legacy.source_path": str(Path(report.path).resolve()),
                              "bdgen.generation_run_id": row.generation_run_id,
                              "bdgen.evaluation_run_id": row.evaluation_run_id,
                              **upgraded}) as run:
                    run.log_metrics(normalise_metrics(per_seed[row.seed]))
                if run.run_id is None:
                    continue
                run_id = run.run_id
                created += 1
            if row.mlflow_run_id != run_id:
                store.link_mlflow_run("evaluation", row.evaluation_run_id, run_id)
    return created
