"""Expectation verdicts as MLflow tags on the evaluation runs behind judged results, so the
MLflow UI can filter runs by verdict (``bdgen check``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bdgen.eval.aggregate import MethodResult
from bdgen.pipeline.context import find_workspace, optional_tracker
from bdgen.pipeline.mlflow_links import CLAIM_PREFIX
from bdgen.report.expectations import Verdict


def record_verdicts(judged: Sequence[tuple[MethodResult, Mapping[str, Verdict]]],
                    expectations: str, no_mlflow: bool = False) -> int:
    """Tag every evaluation MLflow run behind each judged result with its verdicts.

    Tags are ``bdgen.verdict.<expectations>.<metric> = pass|in-range|miss|fail|missing``.
    Returns the number of runs tagged; with ``--no-mlflow`` or no tracking store reachable
    from here (no workspace, no ``$MLFLOW_TRACKING_URI``) nothing is tagged and 0 is
    returned.
    """
    run_ids = [rid for result, _ in judged for rid in _linked(result)]
    if no_mlflow or not run_ids:
        return 0
    tracker = optional_tracker(find_workspace())
    if not tracker.enabled:
        return 0
    tagged = 0
    for result, verdicts in judged:
        ids = _linked(result)
        tracker.tag_runs(ids, {f"bdgen.verdict.{expectations}.{metric}": v.verdict
                               for metric, v in verdicts.items()})
        tagged += len(ids)
    return tagged


def _linked(result: MethodResult) -> list[str]:
    """The MLflow run ids of a result's seeds (not the claims of imports still logging)."""
    return [rid for rid in result.mlflow_run_ids.values()
            if rid and not rid.startswith(CLAIM_PREFIX)]
