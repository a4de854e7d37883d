"""The tracked evaluation job: each generation run of the store evaluated as one MLflow run
and one evaluation row, after its samples file is checked against the store's sha256."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bdgen.errors import BdgenError
from bdgen.guidance.constraints import ConstraintSet
from bdgen.pipeline.context import JobContext, workspace_relative
from bdgen.pipeline.evaluate import evaluate_samples_files, find_samples_files
from bdgen.pipeline.heartbeat import Heartbeat
from bdgen.pipeline.plots import metric_bars
from bdgen.pipeline.result_runs import ResultKey, dataset_ref, log_aggregates, result_parent
from bdgen.pipeline.store import open_store
from bdgen.pipeline.stored_runs import (
    EvaluationRecord,
    VerifiedSamples,
    stored_evaluation,
    verify_samples,
)
from bdgen.pipeline.tracked_denoising import denoise_model_once
from bdgen.pipeline.workspace import Workspace
from bdgen.store.api import (
    DEFAULT_EVALUATOR_VERSION,
    DEFAULT_REFERENCE,
    GenerationRunInfo,
    normalise_metrics,
)
from bdgen.store.claims import Claim, ClaimLost, evaluation_key
from bdgen.tracking import experiment_name
from bdgen.util.atomic import atomic_write_json
from bdgen.util.clock import utcnow
from bdgen.util.faults import fault_point

log = logging.getLogger(__name__)

#: Headline metrics written to the per-evaluation metrics JSON (``dvc exp show``/``metrics``).
HEADLINE_METRICS = ("validity_rate", "inside_validity", "novelty", "mode_coverage_weighted",
                    "node_tv", "edge_tv", "conditional_edge_tv_weighted", "transitivity_score")


def tracked_evaluate(ws: Workspace, run_ids: Sequence[int], *, no_mlflow: bool = False,
                     replace: bool = False, metrics_out: dict[int, Path] | None = None,
                     plots: bool = True, constraints: ConstraintSet | None = None,
                     claim: bool = False, denoise: bool = True) -> list[EvaluationRecord]:
    """Evaluate generation runs, one tracked evaluation run each.

    ``constraints``: measure unguided runs against this set too (the evaluation is then a
    result of its own, in the set's series); guided runs are measured against the set their
    samples file carries.

    Every samples file is verified against the store's sha256 before anything is computed.
    Runs already evaluated (same reference and evaluator version) are skipped unless
    ``replace``. ``metrics_out`` maps a generation run id to a JSON file receiving its
    headline metrics (for DVC). Each evaluation is claimed (:mod:`bdgen.store.claims`)
    while it is computed; one another live process holds is an error, or with ``claim``
    (sweeps) skipped. ``denoise``: also record each model's denoising metrics when the
    store lacks them (a sweep schedules those as a unit of their own).
    """
    records: list[EvaluationRecord] = []
    with JobContext.open(ws, no_mlflow) as ctx:
        infos = [ctx.store.generation_run(int(r)) for r in run_ids]
        files = [verify_samples(ws, info) for info in infos]  # all checked before any work
        bar = ctx.progress(len(infos), "evaluate", "run")
        for done, (info, samples) in enumerate(zip(infos, files)):
            bar.update_to(done, f"run {info.id}: {info.model_id}/{info.method}/{info.seed}")
            cs_id = constraints.identity if constraints is not None else (
                info.constraint_set or None)
            done_before = None if replace else stored_evaluation(ctx, info, cs_id)
            if done_before is not None:
                log.info("generation run %s: already evaluated (evaluation run %s), skipped",
                         info.id, done_before.evaluation_run_id)
                rec = done_before
            else:
                got = _claimed_evaluation(ctx, info, samples, replace, plots, constraints,
                                          cs_id, claim)
                if got is None:
                    continue
                rec = got
            records.append(rec)
            if denoise:
                denoise_model_once(ctx, info.model_id)
            if metrics_out and info.id in metrics_out:
                atomic_write_json(metrics_out[info.id], {
                    k: rec.metrics[k] for k in HEADLINE_METRICS if k in rec.metrics},
                    indent=2, sort_keys=True)
    return records


def _claimed_evaluation(ctx: JobContext, info: GenerationRunInfo, samples: VerifiedSamples,
                        replace: bool, plots: bool, constraints: ConstraintSet | None,
                        cs_id: str | None, skip_held: bool) -> EvaluationRecord | None:
    """:func:`_evaluate_one` under the evaluation's claim; None when another live process
    holds it and ``skip_held``, or recorded it meanwhile, or took the claim over while this
    one was frozen past the lease expiry (logged: the evaluation is the new holder's, which
    records it; nothing of this one is recorded, :class:`ClaimLost`; when the new holder
    recorded it already, its record is returned, as skipped)."""
    key = evaluation_key(info.id, DEFAULT_REFERENCE, DEFAULT_EVALUATOR_VERSION, cs_id)
    ctx.tracker.connect()  # work to do: MLflow's store opens before the claim
    attempt = ctx.store.try_claim("evaluation", key)
    if attempt.claim is None:
        assert attempt.holder is not None
        if skip_held:
            log.info("generation run %s: being evaluated by %s, skipped", info.id,
                     attempt.holder.describe())
            return None
        raise BdgenError(f"generation run {info.id} is being evaluated by "
                         f"{attempt.holder.describe()}; wait for it or stop that process")
    try:
        prev = ctx.store.evaluation_of(info.id, DEFAULT_REFERENCE, DEFAULT_EVALUATOR_VERSION,
                                       constraint_set=cs_id)
        if prev is not None and prev.status == "succeeded" and not replace:
            return None  # recorded by another process between our check and our claim
        with Heartbeat(ctx.store, attempt.claim):
            return _evaluate_one(ctx, info, samples, replace, plots, constraints,
                                 attempt.claim)
    except ClaimLost as lost:  # the work is another process's now: it records it
        log.warning("generation run %s: evaluation not recorded: %s", info.id, lost)
        return stored_evaluation(ctx, info, cs_id)
    finally:  # recorded (claim already gone) or failed: free it for the next attempt
        ctx.store.release_claim(attempt.claim)


def _evaluate_one(ctx: JobContext, info: GenerationRunInfo, samples: VerifiedSamples,
                  replace: bool, plots: bool, constraints: ConstraintSet | None = None,
                  claim: Claim | None = None) -> EvaluationRecord:
    """One generation run: metrics computed, then MLflow run + evaluation row together,
    recorded under ``claim`` (the evaluation's) only (``record_evaluation``)."""
    ws, path, md5, sha = ctx.workspace, samples.path, samples.md5, samples.sha256
    rel = ctx.rel(path)
    name = f"{info.model_id}/{info.method}/{info.seed}"
    params = {"generation_run_id": info.id, "model_id": info.model_id,
              "method": info.method, "seed": info.seed,
              "num_samples": info.num_samples, "steps": info.steps,
              "samples": {"path": rel, "sha256": sha}}
    tags = {"bdgen.generation_run_id": info.id, "bdgen.model_id": info.model_id,
            "bdgen.method": info.method, "bdgen.seed": info.seed,
            "bdgen.generation_mlflow_run_id": info.mlflow_run_id,
            "bdgen.artifact.samples.path": rel, "bdgen.artifact.samples.md5": md5,
            "bdgen.artifact.samples.sha256": sha}
    started = utcnow()
    t0 = time.perf_counter()
    (result,) = evaluate_samples_files([path], data_dir=ws.data_dir, cache_dir=ws.cache_dir,
                                       denoising=False, constraints=constraints)
    cs_id = result.constraint_set_id
    if cs_id is not None:
        params["constraint_set"] = cs_id
        tags["bdgen.constraint_set"] = cs_id
    per_seed = result.per_seed[str(info.seed)]
    clean = normalise_metrics(per_seed)
    fault_point("evaluate.computed")
    dataset_id = result.dataset.get("id") or result.model.get("dataset_id", "unknown")
    experiment = experiment_name(dataset_id)
    key = ResultKey(info.model_id, info.method, info.num_samples, info.steps, cs_id or "")
    dataset = dataset_ref(dataset_id, ctx.rel(ws.dataset_path(dataset_id)))
    parent = result_parent(ctx.store, ctx.tracker, experiment, key, dataset)
    with ctx.tracker.open_run("evaluate", name, experiment, params,
                              {**tags, "bdgen.dataset_id": dataset_id},
                              run_name=f"{info.method}/{info.seed}", parent=parent) as run:
        run.log_dataset(dataset.name, dataset.dataset_id, dataset.source, "evaluation")
        ev_id = ctx.store.record_evaluation(info.id, per_seed, mlflow_run_id=run.run_id,
                                            no_mlflow=not ctx.tracker.enabled,
                                            started_at=started,
                                            duration_s=time.perf_counter() - t0,
                                            replace=replace, constraint_set=cs_id,
                                            claim=claim)
        run.set_tags({"bdgen.evaluation_run_id": ev_id})
        log_aggregates(ctx.store, ctx.tracker, parent, key)
        run.log_metrics({**clean, "eval_time_s": time.perf_counter() - t0})
        if plots and ctx.tracker.enabled:
            with tempfile.TemporaryDirectory() as d:
                bars = {k: clean[k] for k in HEADLINE_METRICS if k in clean}
                run.log_artifact(metric_bars(bars, Path(d) / "headline.png", name), "plots")
    shown = ", ".join(f"{k} {clean[k]:.3f}" for k in HEADLINE_METRICS[:4] if k in clean)
    log.info("%s: evaluation run %s (%s)", name, ev_id, shown)
    return EvaluationRecord(info.id, ev_id, run.run_id, info.model_id, info.method, info.seed,
                            sha, clean)


def verify_registered_files(ws: Workspace, paths: Sequence[str | Path]) -> int:
    """Check every samples file (or directory of them) that the store knows against its
    recorded sha256, before evaluating; BdgenError on a mismatch. Returns how many were
    checked (files the store does not know are left alone)."""
    files = {workspace_relative(ws, f): f for f in find_samples_files(paths)}
    with open_store(workspace=ws) as store:
        known = store.generation_runs_by_path(list(files))
        for run_id in known.values():
            verify_samples(ws, store.generation_run(run_id))
    return len(known)


def pending_runs(ws: Workspace, model_id: str | None = None) -> list[int]:
    """Generation runs (succeeded, made by bdgen) not evaluated yet."""
    with open_store(workspace=ws) as store:
        return store.pending_generation_runs(DEFAULT_REFERENCE, DEFAULT_EVALUATOR_VERSION,
                                             model_id)
