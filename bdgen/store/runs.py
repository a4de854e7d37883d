"""Generation runs: started (or claimed by one of several racing processes), finished with
their samples file, failed with a reason, linked to their MLflow runs."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import cast

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bdgen.diffusion.method import Method as MethodSpec
from bdgen.errors import BdgenError
from bdgen.store import summaries
from bdgen.store.engine import redact
from bdgen.store.identities import Identities
from bdgen.store.models import (
    BDGEN_PROVENANCE,
    CONSTRAINT_SET_LEN,
    DenoisingEvaluation,
    EvaluationRun,
    GenerationRun,
    Model,
    Series,
    table,
)
from bdgen.store.normalise import method_spec
from bdgen.util.clock import utcnow
from bdgen.util.provenance import code_version, hostname

#: A "running" generation row older than this is taken to be from a dead process.
STALE_AFTER = timedelta(hours=6)


def check_constraint_set(spec: MethodSpec, constraint_set: str | None) -> None:
    """A guided method samples with a constraint set, an unguided one with none."""
    if spec.guided and not constraint_set:
        raise BdgenError(f"guided method {spec.format()} needs the identity of its "
                         "constraint set")
    if not spec.guided and constraint_set:
        raise BdgenError(f"method {spec.format()} is not guided: it samples with no "
                         "constraint set (measure one at evaluation instead)")
    if constraint_set is not None and (not isinstance(constraint_set, str)
                                       or len(constraint_set) > CONSTRAINT_SET_LEN):
        raise BdgenError(f"constraint set identity must be a string of at most "
                         f"{CONSTRAINT_SET_LEN} characters, got {constraint_set!r}")


def _drop_measurements(s: Session, gen: GenerationRun) -> list[int]:
    """Delete the measurements of an unguided run against constraint sets (its rows in the
    sets' series, :meth:`Evaluations._measured_run`) when the run is redone or fails: they
    describe samples that are gone. Returns the series whose summaries change."""
    series = s.get(Series, gen.series_pk)
    if series is None or series.constraint_set:
        return []
    twins = s.execute(select(GenerationRun.id, GenerationRun.series_pk)
                      .join(Series, Series.id == GenerationRun.series_pk)
                      .where(Series.model_pk == series.model_pk,
                             Series.method_pk == series.method_pk,
                             Series.num_samples == series.num_samples,
                             Series.steps == series.steps, Series.constraint_set != "",
                             GenerationRun.seed == gen.seed,
                             GenerationRun.constraint_set.is_(None))).all()
    if not twins:
        return []
    ids = [t.id for t in twins]
    s.execute(delete(EvaluationRun).where(EvaluationRun.generation_run_pk.in_(ids)))
    s.execute(delete(GenerationRun).where(GenerationRun.id.in_(ids)))
    s.flush()
    return sorted({t.series_pk for t in twins})


class GenerationRuns(Identities):
    """The life of a generation run row: running -> succeeded | failed."""

    def start_generation_run(self, model_id: str, method: MethodSpec | str, seed: int,
                             num_samples: int, steps: int, *,
                             mlflow_run_id: str | None = None, no_mlflow: bool = False,
                             force: bool = False, constraint_set: str | None = None) -> int:
        """Insert (or take over a failed/stale running) generation run row, status running.

        ``constraint_set``: identity of the set a guided method samples with (part of the
        run's identity; required for guided methods, refused for unguided ones).
        A succeeded run with the same identity is an error unless ``force`` (which discards
        its evaluations: they described the old samples).
        """
        for name, v in (("seed", seed), ("num_samples", num_samples), ("steps", steps)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise BdgenError(f"{name} must be an integer, got {v!r}")
        spec = method_spec(method)
        check_constraint_set(spec, constraint_set)
        now = utcnow()
        with self.session() as s:
            model_pk = self._model_pk(s, model_id)
            series = self._series(s, model_pk, self._method(s, spec).id, num_samples, steps,
                                  constraint_set)
            key = {"series_pk": series.id, "seed": seed}
            row = s.scalars(select(GenerationRun).filter_by(**key)).one_or_none()
            if row is not None and row.status == "succeeded" and not force:
                raise BdgenError(
                    f"generation run {row.id} ({model_id}, {spec.format()}, seed {seed}, "
                    f"n {num_samples}, steps {steps}) already succeeded; use force to redo it")
            existed = row is not None
            if row is None:
                row = GenerationRun(**key)
                s.add(row)
            else:
                s.execute(delete(EvaluationRun).where(EvaluationRun.generation_run_pk == row.id))
            row.status, row.started_at, row.finished_at, row.duration_s = "running", now, None, None
            row.samples_path = row.samples_sha256 = row.error = None
            row.code_version, row.host = code_version(), hostname()
            row.mlflow_run_id, row.no_mlflow, row.provenance = (mlflow_run_id, no_mlflow,
                                                               BDGEN_PROVENANCE)
            row.constraint_set = constraint_set
            s.flush()
            if existed:  # its evaluations are gone: the series' summaries change
                summaries.refresh(s.connection(), [series.id, *_drop_measurements(s, row)])
            return row.id

    def claim_generation_run(self, model_id: str, method: str, seed: int, num_samples: int,
                             steps: int, *, no_mlflow: bool = False,
                             stale_after: timedelta = STALE_AFTER,
                             constraint_set: str | None = None) -> int | None:
        """Claim a generation run for this process: its row id, or None when another process
        has it (running) or it is done (succeeded).

        The claim is the insert of the row with status ``running`` under the table's unique
        constraint (or a conditional UPDATE of a failed/stale row), so of N processes racing
        for one identity exactly one wins, on SQLite and PostgreSQL alike.
        """
        spec = MethodSpec.parse(method)
        check_constraint_set(spec, constraint_set)
        self.get_or_create_method(spec)
        now = utcnow()
        book = {"status": "running", "started_at": now, "finished_at": None,
                "duration_s": None, "samples_path": None, "samples_sha256": None,
                "error": None, "code_version": code_version(), "host": hostname(),
                "mlflow_run_id": None, "no_mlflow": no_mlflow, "provenance": BDGEN_PROVENANCE,
                "constraint_set": constraint_set}
        with self.session() as s:
            model_pk = self._model_pk(s, model_id)
            series = self._series(s, model_pk, self._method(s, spec).id, num_samples, steps,
                                  constraint_set)
            key = {"series_pk": series.id, "seed": seed}
            try:
                with s.begin_nested():
                    row = GenerationRun(**key, **book)
                    s.add(row)
                    s.flush()
                    return row.id
            except IntegrityError:
                pass
            takeover = (GenerationRun.status == "failed") | (
                (GenerationRun.status == "running")
                & (GenerationRun.started_at < now - stale_after))
            res = s.execute(update(GenerationRun).filter_by(**key).where(takeover)
                            .values(**book).returning(GenerationRun.id))
            got = res.scalar_one_or_none()
            if got is not None:
                s.execute(table(EvaluationRun).delete().where(
                    EvaluationRun.generation_run_pk == got))
                taken = s.get(GenerationRun, got)
                if taken is not None:
                    summaries.refresh(s.connection(), _drop_measurements(s, taken))
            return got

    def finish_generation_run(self, run_id: int, sha256: str, path: str | Path, *,
                              mlflow_run_id: str | None = None,
                              duration_s: float | None = None) -> None:
        """Mark a running generation run succeeded, with its samples file and hash."""
        now = utcnow()
        with self.session() as s:
            row = s.get(GenerationRun, run_id)
            if row is None:
                raise BdgenError(f"generation run {run_id} not found in {redact(self.url)}")
            if row.status == "succeeded":
                raise BdgenError(f"generation run {run_id} is already finished")
            row.status, row.finished_at, row.error = "succeeded", now, None
            row.samples_sha256, row.samples_path = sha256, str(path)
            row.duration_s = duration_s if duration_s is not None else (
                (now - row.started_at).total_seconds() if row.started_at else None)
            if mlflow_run_id is not None:
                row.mlflow_run_id = mlflow_run_id
            s.flush()  # a failed run that succeeds again counts its evaluations again
            summaries.refresh(s.connection(), [row.series_pk])

    def fail_run(self, run_id: int, error: str, *, kind: str = "generation") -> None:
        """Mark a run (``kind``: generation | evaluation | denoising) failed with a reason."""
        kinds: dict[str, type[GenerationRun | EvaluationRun | DenoisingEvaluation]] = {
            "generation": GenerationRun, "evaluation": EvaluationRun,
            "denoising": DenoisingEvaluation}
        cls = kinds.get(kind)
        if cls is None:
            raise BdgenError(f"unknown run kind {kind!r}; valid: generation, evaluation, "
                             "denoising")
        now = utcnow()
        with self.session() as s:
            row = cast("GenerationRun | EvaluationRun | DenoisingEvaluation | None",
                       s.get(cls, run_id))
            if row is None:
                raise BdgenError(f"{kind} run {run_id} not found in {redact(self.url)}")
            row.status, row.finished_at, row.error = "failed", now, str(error)[:2000]
            if row.started_at:
                row.duration_s = (now - row.started_at).total_seconds()
            if not isinstance(row, DenoisingEvaluation):  # its evaluations no longer count
                s.flush()
                dropped = _drop_measurements(s, row) if isinstance(row, GenerationRun) else []
                summaries.refresh(s.connection(), [row.series_pk, *dropped])

    def link_mlflow_run(self, kind: str, row_id: int, mlflow_run_id: str) -> None:
        """Record ``mlflow_run_id`` on a generation/evaluation row (and clear ``no_mlflow``)."""
        kinds: dict[str, type[GenerationRun | EvaluationRun]] = {
            "generation": GenerationRun, "evaluation": EvaluationRun}
        cls = kinds[kind]
        with self.session() as s:
            s.execute(update(cls).where(cls.id == row_id)
                      .values(mlflow_run_id=mlflow_run_id, no_mlflow=False))

    def link_model_run(self, model_id: str, mlflow_run_id: str) -> None:
        """Record the MLflow run that trained ``model_id``."""
        with self.session() as s:
            s.execute(update(Model).where(Model.model_id == model_id)
                      .values(mlflow_run_id=mlflow_run_id))
