"""Store operations the tracked jobs need beyond :class:`bdgen.store.api.Store`'s public API:
atomically claiming a generation run (parallel sweeps), linking rows to MLflow runs after the
fact (legacy imports) and listing the rows a legacy file produced.

Kept here, small and explicit, so the store's API stays the one for recording results; these
would move into ``Store`` as methods if other callers need them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from bdgen.diffusion.method import Method as MethodSpec
from bdgen.store.api import Store, code_version, hostname
from bdgen.store.models import EvaluationRun, GenerationRun, Method, Model

#: A "running" generation row older than this is taken to be from a dead process.
STALE_AFTER = timedelta(hours=6)


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def generation_status(store: Store, model_id: str, method: str, seed: int, num_samples: int,
                      steps: int) -> tuple[int, str] | None:
    """(row id, status) of a generation run identity, or None when the store lacks it."""
    with store.read_session() as s:
        row = s.execute(
            select(GenerationRun.id, GenerationRun.status)
            .join(Model, GenerationRun.model_pk == Model.id)
            .join(Method, GenerationRun.method_pk == Method.id)
            .where(Model.model_id == model_id, Method.name == method,
                   GenerationRun.seed == seed, GenerationRun.num_samples == num_samples,
                   GenerationRun.steps == steps)).one_or_none()
    return (row[0], row[1]) if row else None


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
        key = {"model_pk": model_pk, "method_pk": method_pk, "seed": seed,
               "num_samples": num_samples, "steps": steps}
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
            select(Model.model_id, Method.name, GenerationRun.seed, GenerationRun.num_samples,
                   GenerationRun.steps, GenerationRun.id, EvaluationRun.id,
                   EvaluationRun.mlflow_run_id)
            .join(GenerationRun, EvaluationRun.generation_run_pk == GenerationRun.id)
            .join(Model, GenerationRun.model_pk == Model.id)
            .join(Method, GenerationRun.method_pk == Method.id)
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
            .join(Model, GenerationRun.model_pk == Model.id)
            .join(Method, GenerationRun.method_pk == Method.id)
            .where(Model.model_id == model_id, Method.name == method,
                   GenerationRun.seed == seed, GenerationRun.num_samples == num_samples,
                   GenerationRun.steps == steps)).one_or_none()
    return dict(row._mapping) if row else None
