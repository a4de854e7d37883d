"""Log imported legacy results to MLflow: one run per (method, seed), idempotently.

Legacy result files (spec §7.3) are imported into the store by
:mod:`bdgen.store.legacy_import`; this puts the same per-seed metrics into MLflow so old and
new results are browsed side by side. Runs go to the experiment ``bdgen/legacy-graph2plan``
(the legacy models were trained on Graph2Plan/RPLAN, whose prepared dataset id is not
known), tagged ``bdgen.kind=legacy-import`` and ``bdgen.legacy.source_sha256``. Before a
run is created MLflow is searched for one with the same source hash and seed, so
re-importing creates no duplicates; the store rows get the MLflow run id.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from bdgen.eval.legacy_json import UPGRADED_FLAG, as_format_2
from bdgen.store.api import Store, normalise_metrics
from bdgen.store.legacy_import import FileReport
from bdgen.store.links import legacy_rows, link_mlflow_run
from bdgen.tracking import Tracker

LEGACY_EXPERIMENT = "bdgen/legacy-graph2plan"
KIND = "legacy-import"


def log_legacy_reports(store: Store, tracker: Tracker, reports: Iterable[FileReport]) -> int:
    """MLflow runs for every seed of every imported (added or skipped) file; returns how many
    runs were created."""
    created = 0
    for report in reports:
        if report.status == "failed" or not tracker.enabled:
            continue
        raw = Path(report.path).read_bytes()
        sha = hashlib.sha256(raw).hexdigest()
        data = as_format_2(json.loads(raw))  # a v1 file: its one seed, as imported
        per_seed = {int(k): v for k, v in data["per_seed"].items()}
        upgraded = {"bdgen.legacy.upgraded_from_v1": "true"} if data.get(UPGRADED_FLAG) else {}
        for row in legacy_rows(store, sha):
            tags = {"bdgen.kind": KIND, "bdgen.legacy.source_sha256": sha,
                    "bdgen.seed": str(row.seed)}
            found = tracker.find_runs(LEGACY_EXPERIMENT, tags)
            if found:
                run_id = found[0]
            else:
                params = {"config": data.get("config", {}), "method": row.method,
                          "model_id": row.model_id, "seed": row.seed}
                with tracker.open_run(
                        KIND, f"{row.model_id}/{row.method}/{row.seed}", LEGACY_EXPERIMENT,
                        params=params,
                        tags={**tags, "bdgen.model_id": row.model_id, "bdgen.method": row.method,
                              "bdgen.legacy.source_path": str(Path(report.path).resolve()),
                              "bdgen.generation_run_id": row.generation_run_id,
                              "bdgen.evaluation_run_id": row.evaluation_run_id,
                              **upgraded}) as run:
                    run.log_metrics(normalise_metrics(per_seed[row.seed]))
                run_id = run.run_id
                created += 1
            if row.mlflow_run_id != run_id:
                link_mlflow_run(store, "evaluation", row.evaluation_run_id, run_id)
    return created

