"""Evaluations: the metric values of one generation run (per seed) and the denoising
metrics of a model, each recorded in one transaction with the summaries they change.

Writes are single transactions: ``record_evaluation`` commits the run row, marked
succeeded, together with *all* its metric values, or nothing; after a failure the
evaluation row is marked failed (with the reason) so that a re-run can take it over.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

import bdgen
from bdgen.diffusion.method import Method as MethodSpec
from bdgen.errors import BdgenError
from bdgen.eval.registry import is_constraint_metric, lookup
from bdgen.store import summaries
from bdgen.store.claims import Claim, ClaimLost, evaluation_key, settle_in
from bdgen.store.engine import bulk_insert, redact
from bdgen.store.identities import Identities
from bdgen.store.models import (
    BDGEN_PROVENANCE,
    DenoisingEvaluation,
    DenoisingValue,
    EvaluationRun,
    GenerationRun,
    MetricValue,
    Series,
    table,
)
from bdgen.store.models import Method as MethodRow
from bdgen.store.normalise import method_spec, normalise_denoising, normalise_metrics
from bdgen.util.clock import utcnow
from bdgen.util.provenance import code_version, hostname

DEFAULT_REFERENCE = "train"  # the metric reference set: the training split (spec §6.1)
DEFAULT_EVALUATOR_VERSION = f"bdgen-{bdgen.__version__}"


class AlreadyRecorded(BdgenError):
    """The evaluation exists and succeeded (not a failure of this run)."""


class Evaluations(Identities):
    """Recording per-seed and denoising metrics."""

    def record_evaluation(self, generation_run_id: int, metrics: Mapping[str, Any], *,
                          reference: str = DEFAULT_REFERENCE,
                          evaluator_version: str = DEFAULT_EVALUATOR_VERSION,
                          mlflow_run_id: str | None = None, no_mlflow: bool = False,
                          started_at: datetime | None = None,
                          duration_s: float | None = None, replace: bool = False,
                          constraint_set: str | None = None,
                          claim: Claim | None = None) -> int:
        """Record one evaluation of a generation run with all its metric values, atomically.

        ``constraint_set``: identity of the set its ``constraint/*`` metrics were measured
        against. A guided run is measured against the set it sampled with; an unguided run
        measured against a set is recorded in that set's series (a generation row of its
        own there, naming the same samples file), so that it is a result of its own and is
        never pooled with the run's other measurements.

        ``metrics``: per-seed metrics (canonical names or legacy keys, nested stratified
        dicts allowed). Returns the evaluation run id. On any failure nothing of it is
        committed, the evaluation row is marked failed (when the generation run exists) and
        the error is raised (:class:`BdgenError` for bad input). An already succeeded
        evaluation with the same (generation run, reference, evaluator version) is an error
        unless ``replace``.

        ``claim``: the ``evaluation`` claim the caller holds
        (:func:`~bdgen.store.claims.evaluation_key`,
        :func:`~bdgen.pipeline.tracked_evaluate.tracked_evaluate`). As for
        :meth:`~bdgen.store.runs.GenerationRuns.finish_generation_run`, it is checked first
        and only that claim is dropped, matched by its token; a holder whose claim is no
        longer its own (taken over while it was frozen past the lease expiry, or the
        evaluation recorded or failed elsewhere) gets :class:`~bdgen.store.claims.ClaimLost`
        and nothing is recorded, nor marked failed: the new holder's claim and evaluation
        stand. Without ``claim`` the caller must be free to claim the evaluation itself (no
        live holder other than this process; :func:`~bdgen.store.claims.settle_in`); a
        failure is marked on the row under the same rule.
        """
        claim_key = evaluation_key(generation_run_id, reference, evaluator_version,
                                   constraint_set)
        try:
            clean = normalise_metrics(metrics, f"evaluation of generation run "
                                      f"{generation_run_id}")
            for name in clean:
                if lookup(name).group == "denoising":
                    raise BdgenError(f"metric {name!r} is a per-model denoising metric: "
                                     "record it with record_denoising")
            with self.session() as s:
                settle_in(s, "evaluation", claim_key, claim,  # before anything is read
                          f"evaluation of generation run {generation_run_id}")
                ev = self._insert_evaluation(
                    s, generation_run_id, clean, reference=reference,
                    evaluator_version=evaluator_version, replace=replace,
                    bookkeeping={"mlflow_run_id": mlflow_run_id, "no_mlflow": no_mlflow,
                                 "started_at": started_at, "duration_s": duration_s},
                    constraint_set=constraint_set)
            return ev
        except (AlreadyRecorded, ClaimLost):
            raise
        except BaseException as exc:
            self._mark_evaluation_failed(generation_run_id, reference, evaluator_version, exc,
                                         constraint_set, claim_key, claim)
            if isinstance(exc, IntegrityError):
                raise BdgenError(
                    f"evaluation of generation run {generation_run_id} conflicts with a "
                    f"concurrent write: {str(exc.orig).splitlines()[0]}") from None
            raise

    def _insert_evaluation(self, s: Session, generation_run_id: int,
                           metrics: dict[str, float], *, reference: str,
                           evaluator_version: str, replace: bool,
                           bookkeeping: dict[str, Any],
                           constraint_set: str | None = None) -> int:
        gen = s.get(GenerationRun, generation_run_id)
        if gen is None:
            raise BdgenError(f"generation run {generation_run_id} not found in "
                             f"{redact(self.url)}")
        if gen.status != "succeeded":
            raise BdgenError(f"generation run {generation_run_id} has status {gen.status!r}; "
                             "only succeeded runs can be evaluated")
        gen = self._measured_run(s, gen, constraint_set or "")
        _check_constraint_metrics(metrics, constraint_set)
        now = utcnow()
        row = s.scalars(select(EvaluationRun).filter_by(
            generation_run_pk=gen.id, reference=reference,
            evaluator_version=evaluator_version)).one_or_none()
        if row is not None:
            if row.status == "succeeded" and not replace:
                raise AlreadyRecorded(
                    f"generation run {generation_run_id} already has a succeeded evaluation "
                    f"(id {row.id}, reference {reference!r}, evaluator {evaluator_version!r})")
            s.execute(delete(MetricValue).where(MetricValue.evaluation_run_pk == row.id))
        else:
            row = EvaluationRun(generation_run_pk=gen.id, series_pk=gen.series_pk,
                                reference=reference, evaluator_version=evaluator_version)
            s.add(row)
        row.constraint_set = constraint_set or None
        started = bookkeeping.get("started_at") or now
        duration = bookkeeping.get("duration_s")
        _stamp_succeeded(row, bookkeeping, started, now,
                         duration if duration is not None else (now - started).total_seconds())
        s.flush()
        values = [{"evaluation_run_pk": row.id, "series_pk": gen.series_pk,
                   "metric_pk": self._metric_pk(s, name), "value": v}
                  for name, v in metrics.items()]
        if values:
            s.execute(table(MetricValue).insert(), values)
        summaries.refresh(s.connection(), [gen.series_pk])
        return row.id

    def _measured_run(self, s: Session, gen: GenerationRun, constraint_set: str
                      ) -> GenerationRun:
        """The generation row whose series is ``gen``'s measured against ``constraint_set``:
        ``gen`` itself when its series has that set, else (unguided runs only) a row of the
        same seed in the set's series, naming the same samples (created or brought up to
        date here)."""
        series = gen.series
        if series.constraint_set == constraint_set:
            return gen
        if gen.constraint_set:
            raise BdgenError(f"generation run {gen.id} was sampled with constraint set "
                             f"{gen.constraint_set[:12]}; it is measured against that set "
                             f"only, not {constraint_set[:12] or 'none'}")
        if series.constraint_set:
            raise BdgenError(f"generation run {gen.id} is the measurement of another run "
                             f"against constraint set {series.constraint_set[:12]}; evaluate "
                             "the original run")
        target = self._series(s, series.model_pk, series.method_pk, series.num_samples,
                              series.steps, constraint_set)
        twin = s.scalars(select(GenerationRun).filter_by(series_pk=target.id,
                                                         seed=gen.seed)).one_or_none()
        if twin is None:
            twin = GenerationRun(series_pk=target.id, seed=gen.seed)
            s.add(twin)
        for col in ("status", "started_at", "finished_at", "duration_s", "code_version", "host",
                    "mlflow_run_id", "no_mlflow", "provenance", "source_path", "source_sha256",
                    "samples_path", "samples_sha256"):
            setattr(twin, col, getattr(gen, col))
        twin.constraint_set = None  # sampled with none
        s.flush()
        return twin

    def _existing_measured_run(self, s: Session, gen: GenerationRun, constraint_set: str
                               ) -> GenerationRun | None:
        """:meth:`_measured_run` without creating or changing anything: None when ``gen``
        has no row in the series of ``constraint_set`` (or cannot be measured against it)."""
        series = gen.series
        if series.constraint_set == constraint_set:
            return gen
        if gen.constraint_set or series.constraint_set:
            return None
        target = s.scalar(select(Series.id).where(
            Series.model_pk == series.model_pk, Series.method_pk == series.method_pk,
            Series.num_samples == series.num_samples, Series.steps == series.steps,
            Series.constraint_set == constraint_set))
        if target is None:
            return None
        return s.scalars(select(GenerationRun).filter_by(series_pk=target,
                                                         seed=gen.seed)).one_or_none()

    def _mark_evaluation_failed(self, generation_run_id: Any, reference: str,
                                evaluator_version: str, exc: BaseException,
                                constraint_set: str | None, claim_key: str,
                                claim: Claim | None) -> None:
        """Best effort, in its own transaction: leave a failed row (never touching a
        succeeded one) so the failure is visible and a re-run can take the row over, and
        drop the claim. Only under the claim (:func:`~bdgen.store.claims.settle_in`): a
        caller that lost it, or one without a claim while a live process holds the
        evaluation, leaves the row (someone else's work now) alone.

        The row is that of the evaluation which failed: for an unguided run measured
        against a constraint set, on its row in the set's series (none is left when that
        row does not exist yet: it was to be created by the failed transaction)."""
        if not isinstance(generation_run_id, int) or isinstance(generation_run_id, bool):
            return
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:2000]
        now = utcnow()
        try:
            with self.session() as s:
                settle_in(s, "evaluation", claim_key, claim,
                          f"evaluation of generation run {generation_run_id}")
                gen = s.get(GenerationRun, generation_run_id)
                if gen is None:
                    return
                gen = self._existing_measured_run(s, gen, constraint_set or "")
                if gen is None:
                    return
                row = s.scalars(select(EvaluationRun).filter_by(
                    generation_run_pk=gen.id, reference=reference,
                    evaluator_version=evaluator_version)).one_or_none()
                if row is None:
                    s.add(EvaluationRun(
                        generation_run_pk=gen.id, series_pk=gen.series_pk,
                        constraint_set=constraint_set or None,
                        reference=reference, evaluator_version=evaluator_version,
                        status="failed", started_at=now,
                        finished_at=now, error=reason, code_version=code_version(),
                        host=hostname()))
                elif row.status != "succeeded":
                    # Only a row that never counted changes: summaries stay as they are.
                    s.execute(delete(MetricValue).where(MetricValue.evaluation_run_pk == row.id))
                    row.status, row.finished_at, row.error = "failed", now, reason
        except Exception:  # the original error is what the caller must see
            pass

    def record_evaluations(self, items: Sequence[tuple[int, Mapping[str, Any]]], *,
                           reference: str = DEFAULT_REFERENCE,
                           evaluator_version: str = DEFAULT_EVALUATOR_VERSION) -> list[int]:
        """Bulk form of :meth:`record_evaluation` for many new evaluations in ONE
        transaction (all or nothing; no failed rows are left). Used by imports and bench."""
        clean = [(gid, normalise_metrics(m, f"evaluation of generation run {gid}"))
                 for gid, m in items]
        for _, m in clean:
            _check_constraint_metrics(m, None)  # bulk rows carry no constraint set
        now = utcnow()
        ev_table, mv_table = table(EvaluationRun), table(MetricValue)
        book = {"status": "succeeded", "started_at": now, "finished_at": now,
                "duration_s": 0.0, "code_version": code_version(), "host": hostname(),
                "mlflow_run_id": None, "no_mlflow": True, "provenance": BDGEN_PROVENANCE,
                "source_path": None, "source_sha256": None, "error": None}
        with self.session() as s:
            gids = sorted({g for g, _ in clean})
            series: dict[int, int] = {}
            for i in range(0, len(gids), 5000):
                chunk = gids[i:i + 5000]
                series.update((g, sp) for g, sp in s.execute(
                    select(GenerationRun.id, GenerationRun.series_pk).where(
                        GenerationRun.id.in_(chunk), GenerationRun.status == "succeeded")))
            missing = [g for g in gids if g not in series]
            if missing:
                raise BdgenError(f"generation run {missing[0]} not found or not succeeded")
            names = {n for _, m in clean for n in m}
            pks = {n: self._metric_pk(s, n) for n in sorted(names)}
            rows = [{"generation_run_pk": g, "series_pk": series[g], "reference": reference,
                     "evaluator_version": evaluator_version, **book} for g, _ in clean]
            try:
                ids = list(s.execute(ev_table.insert().returning(
                    ev_table.c.id, sort_by_parameter_order=True), rows).scalars())
            except IntegrityError as exc:
                raise BdgenError(f"bulk evaluation insert conflicts with an existing "
                                 f"evaluation: {str(exc.orig).splitlines()[0]}") from None
            values = [(ev, pks[n], series[g], v)
                      for ev, (g, m) in zip(ids, clean) for n, v in m.items()]
            if values:
                bulk_insert(s.connection(), mv_table.name,
                            ("evaluation_run_pk", "metric_pk", "series_pk", "value"), values)
            summaries.refresh(s.connection(), set(series.values()))
        return ids

    # --- denoising (per model) -----------------------------------------------------------
    def record_denoising(self, model_id: str, metrics: Mapping[str, Any], *,
                         method: MethodSpec | str | None = None,
                         claim: Claim | None = None, mlflow_run_id: str | None = None,
                         no_mlflow: bool = False, duration_s: float | None = None,
                         replace: bool = True) -> int:
        """Record the model-level denoising metrics (``denoise_*`` or ``denoise/...@t=``
        keys) atomically and drop the model's ``denoising`` claim; ``method`` scopes them
        to one method (imported result files, which no claim guards). Replaces a previous
        record of the same scope unless ``replace=False``.

        ``claim``: the ``denoising`` claim the caller holds on the model
        (:func:`~bdgen.pipeline.tracked_denoising.denoise_model_once`). As for
        :meth:`~bdgen.store.runs.GenerationRuns.finish_generation_run`, only that claim is
        dropped, matched by its token; a holder whose claim is no longer its own (taken
        over while it was frozen past the lease expiry, or the metrics recorded elsewhere
        meanwhile) gets :class:`~bdgen.store.claims.ClaimLost` and nothing is recorded: the
        new holder's claim and metrics stand. Without ``claim`` the caller must be free to
        claim the work itself (no live holder other than this process;
        :func:`~bdgen.store.claims.settle_in`)."""
        clean = normalise_denoising(metrics, f"denoising metrics of model {model_id}")
        if claim is not None and method is not None:
            raise BdgenError(f"denoising metrics of model {model_id} scoped to method "
                             f"{method}: no claim guards them, none may be given")
        try:
            with self.session() as s:
                model_pk = self._model_pk(s, model_id)
                if method is None:  # checked before the record is read or written
                    settle_in(s, "denoising", model_id, claim,
                              f"denoising metrics of model {model_id}")
                method_row = (self._method(s, method_spec(method)) if method is not None
                              else None)
                return self._insert_denoising(
                    s, model_pk, method_row, clean, replace=replace,
                    bookkeeping={"mlflow_run_id": mlflow_run_id, "no_mlflow": no_mlflow,
                                 "duration_s": duration_s})
        except IntegrityError as exc:  # a concurrent writer without a claim (imports)
            raise BdgenError(f"denoising metrics of model {model_id} conflict with a "
                             f"concurrent write: {str(exc.orig).splitlines()[0]}") from None

    def _insert_denoising(self, s: Session, model_pk: int, method_row: MethodRow | None,
                          metrics: dict[str, float], *, replace: bool,
                          bookkeeping: dict[str, Any]) -> int:
        now = utcnow()
        scope = method_row.name if method_row is not None else ""
        row = s.scalars(select(DenoisingEvaluation).filter_by(
            model_pk=model_pk, scope=scope)).one_or_none()
        if row is not None:
            if row.status == "succeeded" and not replace:
                raise AlreadyRecorded(f"denoising of model {model_pk} (scope {scope!r}) is "
                                      "already recorded")
            s.execute(delete(DenoisingValue).where(
                DenoisingValue.denoising_evaluation_pk == row.id))
        else:
            row = DenoisingEvaluation(model_pk=model_pk, scope=scope,
                                      method_pk=method_row.id if method_row else None)
            s.add(row)
        _stamp_succeeded(row, bookkeeping, now, now, bookkeeping.get("duration_s"))
        s.flush()
        values = [{"denoising_evaluation_pk": row.id, "metric_pk": self._metric_pk(s, n),
                   "value": v} for n, v in metrics.items()]
        if values:
            s.execute(table(DenoisingValue).insert(), values)
        return row.id


def _check_constraint_metrics(metrics: Mapping[str, float], constraint_set: str | None) -> None:
    """constraint/* metrics are meaningless without the set they were measured against."""
    if not constraint_set and any(is_constraint_metric(n) for n in metrics):
        raise BdgenError("constraint/* metrics need the identity of the constraint set they "
                         "were measured against")


def _stamp_succeeded(row: EvaluationRun | DenoisingEvaluation, bookkeeping: dict[str, Any],
                     started: datetime, now: datetime, duration_s: float | None) -> None:
    """Mark an evaluation-like run row succeeded with its provenance and bookkeeping."""
    row.status, row.started_at, row.finished_at, row.error = "succeeded", started, now, None
    row.duration_s = duration_s
    row.code_version = bookkeeping.get("code_version") or code_version()
    row.host = hostname()
    row.mlflow_run_id = bookkeeping.get("mlflow_run_id")
    row.no_mlflow = bool(bookkeeping.get("no_mlflow", False))
    row.provenance = bookkeeping.get("provenance", BDGEN_PROVENANCE)
    row.source_path = bookkeeping.get("source_path")
    row.source_sha256 = bookkeeping.get("source_sha256")
