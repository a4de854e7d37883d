"""The import job of ``bdgen import-legacy``: result files into the store, and their
per-seed metrics into MLflow as one run per (file, seed), exactly once.

Runs go to the experiment ``bdgen/legacy-graph2plan`` (the original models were trained on
Graph2Plan/RPLAN, whose prepared dataset id is not known), tagged
``bdgen.kind=legacy-import`` and ``bdgen.legacy.source_sha256``, nested under one parent
run per result (:mod:`.result_runs`) that carries the store's aggregates.

Exactly once, under concurrency and kills: which process creates a seed's run is decided
by a compare-and-set on the evaluation row's ``mlflow_run_id`` (:mod:`.mlflow_links`), so
4 imports of one folder at once make one run per (file, seed); a re-import reuses the
linked run, and one left unfinished by a killed import (RUNNING, or KILLED by the reaper)
is filled again and marked FINISHED.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bdgen.eval.results_json import UPGRADED_FLAG, as_format_2
from bdgen.pipeline.context import find_workspace, optional_tracker
from bdgen.pipeline.mlflow_links import CLAIM_TAG, evaluation_link, link_run
from bdgen.pipeline.result_runs import ResultKey, dataset_ref, log_aggregates, result_parent
from bdgen.pipeline.store import open_store
from bdgen.store.api import FileReport, ImportedRun, Store, normalise_metrics
from bdgen.tracking import Tracker
from bdgen.util.faults import fault_point

IMPORT_EXPERIMENT = "bdgen/legacy-graph2plan"
KIND = "legacy-import"
#: The dataset input of imported runs: the original models' Graph2Plan/RPLAN training data.
LEGACY_DATASET = "graph2plan-legacy"


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
    """MLflow runs for every seed of every imported (added or skipped) file, and their
    parents' aggregates; returns how many seed runs this process created."""
    created = 0
    for report in reports:
        fault_point("import.file")  # the store has every file; MLflow has files < k
        if report.status == "failed" or not tracker.enabled:
            continue
        raw = Path(report.path).read_bytes()
        sha = hashlib.sha256(raw).hexdigest()
        data = as_format_2(json.loads(raw))  # a v1 file: its one seed, as imported
        per_seed = {int(k): v for k, v in data["per_seed"].items()}
        source = str(Path(report.path).resolve())
        parents: dict[ResultKey, str | None] = {}
        for row in store.imported_runs(sha):
            key = ResultKey(row.model_id, row.method, row.num_samples, row.steps,
                            row.constraint_set)
            if key not in parents:
                parents[key] = result_parent(store, tracker, IMPORT_EXPERIMENT, key,
                                             dataset_ref(LEGACY_DATASET, source))
            seed_run = _SeedRun(tracker, row, sha, source, data, per_seed[row.seed],
                                parents[key])
            run_id, made = link_run(evaluation_link(store, row.evaluation_run_id), tracker,
                                    IMPORT_EXPERIMENT, seed_run.create)
            if not made and tracker.run_status(run_id) != "FINISHED":
                seed_run.fill(run_id)  # left unfinished by a killed import
            created += made
        for key, parent in parents.items():
            log_aggregates(store, tracker, parent, key)
    return created


class _SeedRun:
    """One imported seed as an MLflow run: created under a claim, or refilled."""

    def __init__(self, tracker: Tracker, row: ImportedRun, sha: str, source: str,
                 data: dict, metrics: dict, parent: str | None) -> None:
        self.tracker, self.row, self.parent = tracker, row, parent
        self.metrics = normalise_metrics(metrics)
        self.params = {"config": data.get("config", {}), "method": row.method,
                       "model_id": row.model_id, "seed": row.seed}
        upgraded = {"bdgen.legacy.upgraded_from_v1": "true"} if data.get(UPGRADED_FLAG) else {}
        self.tags = {"bdgen.legacy.source_sha256": sha, "bdgen.seed": str(row.seed),
                     "bdgen.model_id": row.model_id, "bdgen.method": row.method,
                     "bdgen.legacy.source_path": source,
                     "bdgen.generation_run_id": row.generation_run_id,
                     "bdgen.evaluation_run_id": row.evaluation_run_id, **upgraded}
        self.source = source

    def create(self, claim: str) -> str:
        row = self.row
        run = self.tracker.create_run(KIND, f"{row.model_id}/{row.method}/{row.seed}",
                                      IMPORT_EXPERIMENT, {**self.tags, CLAIM_TAG: claim},
                                      run_name=f"{row.method}/{row.seed}", parent=self.parent)
        assert run.run_id is not None
        fault_point("legacy-import.run-created")
        self.fill(run.run_id, fresh=True)
        return run.run_id

    def fill(self, run_id: str, fresh: bool = False) -> None:
        """Params, metrics and dataset input (idempotent: same values), then FINISHED."""
        run = self.tracker.run_for(run_id)
        run.log_params(self.params)
        run.log_metrics(self.metrics)
        if fresh or not self.tracker.get_run(run_id).inputs.dataset_inputs:
            ds = dataset_ref(LEGACY_DATASET, self.source)
            run.log_dataset(ds.name, ds.dataset_id, ds.source, "evaluation")
        self.tracker.end_run(run_id, "FINISHED")
