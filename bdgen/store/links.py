"""Store operations the tracked jobs need beyond the recording API of
:class:`bdgen.store.api.Store`: atomically claiming a generation run (parallel sweeps),
linking rows to MLflow runs after the fact (legacy imports), and the lookups that decide
what a job skips or resumes.

They live in the store package because they are queries on its tables; the pipeline calls
them and never touches the ORM itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from bdgen.diffusion.method import Method as MethodSpec
from bdgen.store.api import Store, code_version, hostname
from bdgen.store.models import (
    DenoisingEvaluation,
    EvaluationRun,
    GenerationRun,
    Method,
    Model,
    Series,
)

#: A "running" generation row older than this is taken to be from a dead process.
STALE_AFTER = timedelta(hours=6)


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def claim_generation_run(store: Store, model_id: str, method: str, seed: int,
                         num_samples: int, steps: int, *, no_mlflow: bool = False,
                         stale_after: timedelta = STALE_AFTER) -> int | None:
    """Claim a generation run for this process: its row id, or None when another process
    has it (running) or it is done (succeeded).

    The claim is the insert of the row with status ``running`` under the table's unique
    constraint (or a conditional UPDATE of a failed/stale row), so of N processes racing for
    one identity exactly one wins, on SQLite and PostgreSQL alike.
    """
    spec = MethodSpec.parse(method)
    store.get_or_create_method(spec)
    now = _now()
    book = {"status": "running", "started_at": now, "finished_at": None, "duration_s": None,
            "samples_path": None, "samples_sha256": None, "error": None,
            "code_version": code_version(), "host": hostname(), "mlflow_run_id": None,
            "no_mlflow": no_mlflow, "provenance": "bdgen"}
    with store.session() as s:
        model_pk = store._model_pk(s, model_id)
        method_pk = s.scalar(select(Method.id).where(Method.name == spec.format()))
        series = store._series(s, model_pk, method_pk, num_samples, steps)
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
            (GenerationRun.status == "running") & (GenerationRun.started_at < now - stale_after))
        res = s.execute(update(GenerationRun).filter_by(**key).where(takeover).values(**book)
                        .returning(GenerationRun.id))
        got = res.scalar_one_or_none()
        if got is not None:
            s.execute(EvaluationRun.__table__.delete().where(
                EvaluationRun.generation_run_pk == got))
        return got


def link_mlflow_run(store: Store, kind: str, row_id: int, mlflow_run_id: str) -> None:
    """Record ``mlflow_run_id`` on a generation/evaluation row (and clear ``no_mlflow``)."""
    cls = {"generation": GenerationRun, "evaluation": EvaluationRun}[kind]
    with store.session() as s:
        s.execute(update(cls).where(cls.id == row_id)
                  .values(mlflow_run_id=mlflow_run_id, no_mlflow=False))


def link_model_run(store: Store, model_id: str, mlflow_run_id: str) -> None:
    with store.session() as s:
        s.execute(update(Model).where(Model.model_id == model_id)
                  .values(mlflow_run_id=mlflow_run_id))


@dataclass(frozen=True)
class ImportedRun:
    model_id: str
    method: str
    seed: int
    num_samples: int
    steps: int
    generation_run_id: int
    evaluation_run_id: int
    mlflow_run_id: str | None


def legacy_rows(store: Store, source_sha256: str) -> list[ImportedRun]:
    """The evaluation rows imported from the legacy file with this sha256."""
    with store.read_session() as s:
        rows = s.execute(
            select(Model.model_id, Method.name, GenerationRun.seed, Series.num_samples,
                   Series.steps, GenerationRun.id, EvaluationRun.id,
                   EvaluationRun.mlflow_run_id)
            .join(GenerationRun, EvaluationRun.generation_run_pk == GenerationRun.id)
            .join(Series, GenerationRun.series_pk == Series.id)
            .join(Model, Series.model_pk == Model.id)
            .join(Method, Series.method_pk == Method.id)
            .where(EvaluationRun.source_sha256 == source_sha256)
            .order_by(GenerationRun.seed)).all()
    return [ImportedRun(*r) for r in rows]


def generation_row(store: Store, model_id: str, method: str, seed: int, num_samples: int,
                   steps: int) -> dict | None:
    """The generation row of an identity as a dict (id, status, samples_path, samples_sha256,
    mlflow_run_id), or None."""
    with store.read_session() as s:
        row = s.execute(
            select(GenerationRun.id, GenerationRun.status, GenerationRun.samples_path,
                   GenerationRun.samples_sha256, GenerationRun.mlflow_run_id)
            .join(Series, GenerationRun.series_pk == Series.id)
            .join(Model, Series.model_pk == Model.id)
            .join(Method, Series.method_pk == Method.id)
            .where(Model.model_id == model_id, Method.name == method,
                   GenerationRun.seed == seed, Series.num_samples == num_samples,
                   Series.steps == steps)).one_or_none()
    return dict(row._mapping) if row else None


def generation_run_info(store: Store, run_id: int) -> dict:
    """A generation row with its model and method names (BdgenError if unknown)."""
    from bdgen.errors import BdgenError

    with store.read_session() as s:
        row = s.execute(
            select(GenerationRun.id, GenerationRun.status, GenerationRun.seed,
                   Series.num_samples, Series.steps, GenerationRun.samples_path,
                   GenerationRun.samples_sha256, GenerationRun.mlflow_run_id,
                   GenerationRun.provenance, Model.model_id, Method.name.label("method"))
            .join(Series, GenerationRun.series_pk == Series.id)
            .join(Model, Series.model_pk == Model.id)
            .join(Method, Series.method_pk == Method.id)
            .where(GenerationRun.id == run_id)).one_or_none()
    if row is None:
        raise BdgenError(f"generation run {run_id} is not in the store")
    return dict(row._mapping)


def generation_runs_by_path(store: Store, paths: list[str]) -> dict[str, int]:
    """Samples path (as recorded) -> generation run id, for the given paths."""
    with store.read_session() as s:
        rows = s.execute(select(GenerationRun.samples_path, GenerationRun.id)
                         .where(GenerationRun.samples_path.in_(paths))).all()
    return dict(rows)


def pending_generation_runs(store: Store, reference: str, evaluator_version: str,
                            model_id: str | None = None) -> list[int]:
    """Succeeded bdgen generation runs without a succeeded evaluation (reference, version)."""
    with store.read_session() as s:
        done = select(EvaluationRun.generation_run_pk).where(
            EvaluationRun.reference == reference,
            EvaluationRun.evaluator_version == evaluator_version,
            EvaluationRun.status == "succeeded")
        q = (select(GenerationRun.id).join(Series, GenerationRun.series_pk == Series.id)
             .join(Model, Series.model_pk == Model.id)
             .where(GenerationRun.status == "succeeded", GenerationRun.provenance == "bdgen",
                    GenerationRun.id.not_in(done)).order_by(GenerationRun.id))
        if model_id is not None:
            q = q.where(Model.model_id == model_id)
        return list(s.scalars(q))


def evaluation_row(store: Store, generation_run_id: int, reference: str,
                   evaluator_version: str) -> dict | None:
    with store.read_session() as s:
        row = s.execute(select(EvaluationRun.id, EvaluationRun.status,
                               EvaluationRun.mlflow_run_id)
                        .where(EvaluationRun.generation_run_pk == generation_run_id,
                               EvaluationRun.reference == reference,
                               EvaluationRun.evaluator_version == evaluator_version)
                        ).one_or_none()
    return dict(row._mapping) if row else None


def evaluation_metrics(store: Store, evaluation_run_id: int) -> dict[str, float]:
    """Canonical metric name -> value of one evaluation run."""
    from bdgen.store.models import MetricDefinition, MetricValue

    with store.read_session() as s:
        rows = s.execute(select(MetricDefinition.name, MetricValue.value)
                         .join(MetricValue, MetricValue.metric_pk == MetricDefinition.id)
                         .where(MetricValue.evaluation_run_pk == evaluation_run_id)).all()
    return dict(rows)


def model_needing_denoising(store: Store, model_id: str) -> tuple[str, str] | None:
    """(checkpoint path, sha256) of a bdgen model with no succeeded model-level denoising
    record yet; None when it has one, or when the model has no checkpoint (legacy)."""
    with store.read_session() as s:
        model = s.execute(select(Model).where(Model.model_id == model_id)).scalar_one_or_none()
        if model is None or not model.checkpoint_path or not model.checkpoint_sha256:
            return None
        done = s.execute(select(DenoisingEvaluation.id).where(
            DenoisingEvaluation.model_pk == model.id, DenoisingEvaluation.scope == "",
            DenoisingEvaluation.status == "succeeded")).first()
        return None if done else (model.checkpoint_path, model.checkpoint_sha256)
