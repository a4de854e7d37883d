"""What the store holds, listed (``bdgen runs``, ``bdgen models``): typed rows, filtered with
the same ``where`` keys as the result queries, so nobody needs SQL or the MLflow UI to find
an id."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, select

from bdgen.errors import BdgenError
from bdgen.store.base import StoreBase
from bdgen.store.models import Dataset, EvaluationRun, GenerationRun, Model, Series
from bdgen.store.models import Method as MethodRow
from bdgen.store.queries import WHERE_COLUMNS, where_clauses

#: ``where`` keys of :meth:`Listing.list_runs` beyond the result queries' ones.
RUN_KEYS: dict[str, Any] = {"status": GenerationRun.status,
                            "provenance": GenerationRun.provenance}
#: ``where`` keys of :meth:`Listing.list_models`.
MODEL_KEYS: tuple[str, ...] = ("model", "version", "noise_schedule")


@dataclass(frozen=True)
class RunListing:
    """One generation run and its latest evaluation."""

    id: int
    model_id: str
    method: str
    seed: int
    num_samples: int
    steps: int
    status: str                  # of the generation run
    evaluation: str | None       # status of its evaluation run, None when not evaluated
    mlflow_run_id: str | None
    provenance: str
    started_at: datetime | None


@dataclass(frozen=True)
class ModelListing:
    """One model with how many generation runs the store holds for it."""

    model_id: str
    version: str
    noise_schedule: str
    dataset_id: str | None
    checkpoint_path: str | None
    mlflow_run_id: str | None
    created_at: datetime | None
    runs: int


def _split(where: Mapping[str, Sequence[Any]], extra: Mapping[str, Any]) -> tuple[list, list]:
    """SQL conditions for ``where``: the result keys, plus ``extra`` columns."""
    known = {k: v for k, v in where.items() if k in WHERE_COLUMNS}
    conds = where_clauses(known) if known else []
    more = []
    for key, values in where.items():
        if key in WHERE_COLUMNS:
            continue
        if key not in extra:
            valid = sorted(set(WHERE_COLUMNS) | set(extra))
            raise BdgenError(f"--where: unknown key {key!r}; valid keys: {', '.join(valid)}")
        col = extra[key]
        more.append(col.in_([str(v) for v in values]))
    return conds, more


class Listing(StoreBase):
    """Listings of runs and models (read-only)."""

    def list_runs(self, where: Mapping[str, Sequence[Any]] | None = None,
                  limit: int | None = None) -> list[RunListing]:
        """Generation runs (newest first), each with its latest evaluation's status."""
        where = dict(where or {})
        if any(k in where for k in ("reference", "evaluator_version")):
            raise BdgenError("--where: reference/evaluator_version are not run fields here")
        conds, more = _split(where, RUN_KEYS)
        latest = (select(EvaluationRun.generation_run_pk,
                         func.max(EvaluationRun.id).label("eid"))
                  .group_by(EvaluationRun.generation_run_pk).subquery())
        q = (select(GenerationRun.id, Model.model_id, MethodRow.name, GenerationRun.seed,
                    Series.num_samples, Series.steps, GenerationRun.status,
                    EvaluationRun.status, GenerationRun.mlflow_run_id,
                     GenerationRun.provenance, GenerationRun.started_at)
             .join(Series, GenerationRun.series_pk == Series.id)
             .join(Model, Series.model_pk == Model.id)
             .join(MethodRow, Series.method_pk == MethodRow.id)
             .outerjoin(latest, latest.c.generation_run_pk == GenerationRun.id)
             .outerjoin(EvaluationRun, and_(EvaluationRun.id == latest.c.eid))
             .where(*conds, *more)
             .order_by(GenerationRun.id.desc()))
        if limit:
            q = q.limit(limit)
        with self.read_session() as s:
            return [RunListing(*row) for row in s.execute(q)]

    def list_models(self, where: Mapping[str, Sequence[Any]] | None = None
                    ) -> list[ModelListing]:
        """Models (by id), with their generation-run counts."""
        where = dict(where or {})
        bad = [k for k in where if k not in MODEL_KEYS]
        if bad:
            raise BdgenError(f"--where: unknown key {bad[0]!r}; valid keys: "
                             f"{', '.join(MODEL_KEYS)}")
        conds = where_clauses(where) if where else []
        runs = (select(Series.model_pk, func.count(GenerationRun.id).label("n"))
                .join(GenerationRun, GenerationRun.series_pk == Series.id)
                .group_by(Series.model_pk).subquery())
        q = (select(Model.model_id, Model.version, Model.noise_schedule, Dataset.dataset_id,
                    Model.checkpoint_path, Model.mlflow_run_id, Model.created_at,
                    func.coalesce(runs.c.n, 0))
             .outerjoin(Dataset, Model.dataset_pk == Dataset.id)
             .outerjoin(runs, runs.c.model_pk == Model.id)
             .where(*conds).order_by(Model.model_id))
        with self.read_session() as s:
            return [ModelListing(*row) for row in s.execute(q)]
