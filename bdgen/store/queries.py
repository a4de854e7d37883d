"""Read-side queries: method results for leaderboards, and SQL aggregates over seeds.

Aggregates are always computed from the per-seed rows, never stored. Two paths compute the
same numbers:

* :func:`select_method_results` fetches per-seed values and aggregates them with
  :meth:`bdgen.eval.aggregate.Aggregate.of` (the reference implementation: ``fsum``,
  population std), building the :class:`MethodResult` objects reports render;
* :func:`metric_aggregates` does it in SQL (one scan: a window mean, then the mean squared
  deviation from it, which is numerically robust, unlike ``avg(v*v) - avg(v)^2``) for large
  stores where only (mean, std, n) is needed.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, NamedTuple

from sqlalchemy import Float, Select, func, or_, select, true
from sqlalchemy.orm import Session

from bdgen.diffusion.method import Method as MethodSpec
from bdgen.errors import BdgenError
from bdgen.eval.aggregate import Aggregate, MethodResult
from bdgen.eval.registry import lookup
from bdgen.store.models import (
    DenoisingEvaluation,
    DenoisingValue,
    EvaluationRun,
    GenerationRun,
    MetricDefinition,
    MetricValue,
    Model,
    Series,
)
from bdgen.store.models import Method as MethodRow

# where-filter keys -> ORM attribute
WHERE_COLUMNS: dict[str, Any] = {
    "model": Model.model_id,
    "version": Model.version,
    "noise_schedule": Model.noise_schedule,
    "method": MethodRow.name,
    "unmasking": MethodRow.unmasking,
    "top_p": MethodRow.top_p,
    "temperature": MethodRow.temperature,
    "strategy": MethodRow.strategy,
    "eta": MethodRow.eta,
    "t_switch": MethodRow.t_switch,
    "v2": MethodRow.v2,
    "seed": GenerationRun.seed,
    "num_samples": Series.num_samples,
    "steps": Series.steps,
    "reference": EvaluationRun.reference,
    "evaluator_version": EvaluationRun.evaluator_version,
}


def _coerce(key: str, column: Any, value: Any) -> Any:
    """Filter values may come from a command line as strings: convert to the column type."""
    if value is None or not isinstance(value, str):
        return value
    if value.lower() in ("none", "null"):
        return None
    py = column.type.python_type
    try:
        if py is bool:
            if value.lower() in ("true", "1", "yes"):
                return True
            if value.lower() in ("false", "0", "no"):
                return False
            raise ValueError(value)
        return py(value)
    except ValueError:
        raise BdgenError(f"filter {key}={value!r}: not a valid {py.__name__}") from None


def where_clauses(where: Mapping[str, Any]) -> list:
    """SQL conditions for a ``where`` dict (equality; list/tuple/set = any of; None = NULL)."""
    out = []
    for key, value in where.items():
        col = WHERE_COLUMNS.get(key)
        if col is None:
            raise BdgenError(f"unknown filter {key!r}; valid: {', '.join(WHERE_COLUMNS)}")
        values = list(value) if isinstance(value, (list, tuple, set, frozenset)) else [value]
        values = [_coerce(key, col, v) for v in values]
        conds = [col.is_(None) if v is None else col == v for v in values]
        out.append(conds[0] if len(conds) == 1 else or_(*conds))
    return out


def _runs_query(model: str | None, where: Mapping[str, Any]) -> Select:
    q = (select(EvaluationRun.id, EvaluationRun.generation_run_pk, EvaluationRun.mlflow_run_id,
                GenerationRun.seed, Series.num_samples, Series.steps,
                Model.id.label("model_pk"), Model.model_id, Model.version,
                Model.noise_schedule, Model.checkpoint_path, Model.checkpoint_sha256,
                Model.legacy_label, MethodRow.name)
         .join(GenerationRun, GenerationRun.id == EvaluationRun.generation_run_pk)
         .join(Series, Series.id == GenerationRun.series_pk)
         .join(Model, Model.id == Series.model_pk)
         .join(MethodRow, MethodRow.id == Series.method_pk)
         .where(EvaluationRun.status == "succeeded", GenerationRun.status == "succeeded"))
    if model is not None:
        q = q.where(Model.model_id == model)
    return q.where(*where_clauses(where))


def _canonical_names(metrics: Sequence[str] | None) -> list[str] | None:
    if metrics is None:
        return None
    out = []
    for m in metrics:
        try:
            out.append(lookup(m).name)
        except KeyError as exc:
            raise BdgenError(exc.args[0]) from None
    return out


@dataclass
class _Group:
    model: Any
    method: str
    num_samples: int
    steps: int
    eval_by_seed: dict[int, int]
    mlflow: dict[int, str]


def select_method_results(s: Session, *, model: str | None = None,
                          where: Mapping[str, Any] | None = None, min_seeds: int = 1,
                          metrics: Sequence[str] | None = None) -> list[MethodResult]:
    """See :meth:`bdgen.store.api.Store.method_results`."""
    where = dict(where or {})
    names = _canonical_names(metrics)
    # 1. the evaluation runs that count: newest succeeded one per generation run
    newest: dict[int, Any] = {}
    for r in s.execute(_runs_query(model, where).order_by(EvaluationRun.id)):
        newest[r.generation_run_pk] = r
    groups: dict[tuple, _Group] = {}
    for r in newest.values():
        key = (r.model_id, r.name, r.num_samples, r.steps)
        g = groups.get(key)
        if g is None:
            g = groups[key] = _Group(r, r.name, r.num_samples, r.steps, {}, {})
        g.eval_by_seed[r.seed] = r.id
        if r.mlflow_run_id:
            g.mlflow[r.seed] = r.mlflow_run_id
    groups = {k: g for k, g in groups.items() if len(g.eval_by_seed) >= min_seeds}
    if not groups:
        return []
    wanted = {ev for g in groups.values() for ev in g.eval_by_seed.values()}
    # 2. their metric values
    values: dict[int, dict[str, float]] = defaultdict(dict)
    q = (_runs_query(model, where).with_only_columns(
            MetricValue.evaluation_run_pk, MetricDefinition.name, MetricValue.value)
         .join(MetricValue, MetricValue.evaluation_run_pk == EvaluationRun.id)
         .join(MetricDefinition, MetricDefinition.id == MetricValue.metric_pk))
    if names is not None:
        q = q.where(MetricDefinition.name.in_(names))
    for ev, name, value in s.execute(q):
        if ev in wanted:
            values[ev][name] = value
    # 3. denoising, per model (method-scoped blocks first, legacy)
    model_pks = {g.model.model_pk for g in groups.values()}
    denoising: dict[tuple[int, str], dict[str, float]] = defaultdict(dict)
    dq = (select(DenoisingEvaluation.model_pk, DenoisingEvaluation.scope,
                 MetricDefinition.name, DenoisingValue.value)
          .join(DenoisingValue,
                DenoisingValue.denoising_evaluation_pk == DenoisingEvaluation.id)
          .join(MetricDefinition, MetricDefinition.id == DenoisingValue.metric_pk)
          .where(DenoisingEvaluation.status == "succeeded",
                 DenoisingEvaluation.model_pk.in_(model_pks)))
    for mpk, scope, name, value in s.execute(dq):
        denoising[(mpk, scope)][name] = value
    # 4. assemble
    out = []
    for key in sorted(groups):
        g = groups[key]
        spec = MethodSpec.parse(g.method)
        seeds = tuple(sorted(g.eval_by_seed))
        per_metric: dict[str, list[float]] = defaultdict(list)
        for seed in seeds:
            for name, v in values.get(g.eval_by_seed[seed], {}).items():
                per_metric[name].append(v)
        ordered = sorted(per_metric, key=_metric_order)
        m = g.model
        config = {"seeds": list(seeds), "num_samples": g.num_samples,
                  "sampling_steps": g.steps, **spec.legacy_config(),
                  "checkpoint": PurePath(m.checkpoint_path).name if m.checkpoint_path else None,
                  "is_v2": spec.v2}
        den = denoising.get((m.model_pk, g.method)) or denoising.get((m.model_pk, ""), {})
        out.append(MethodResult(
            model=m.model_id, method=g.method, config=config,
            metrics={n: Aggregate.of(per_metric[n]) for n in ordered}, seeds=seeds,
            model_fields={"model_id": m.model_id, "version": m.version,
                          "noise_schedule": m.noise_schedule, "legacy_label": m.legacy_label,
                          "checkpoint_sha256": m.checkpoint_sha256},
            method_fields=spec.fields(),
            run_ids={seed: str(ev) for seed, ev in sorted(g.eval_by_seed.items())},
            mlflow_run_ids=dict(sorted(g.mlflow.items())),
            denoising=dict(sorted(den.items()))))
    return out


def _metric_order(name: str) -> tuple[int, str]:
    from bdgen.eval.registry import METRICS

    order = {n: i for i, n in enumerate(METRICS)}
    return (order.get(name, len(order)), name)


class AggregateRow(NamedTuple):
    """One leaderboard cell: a metric of (model, method, num_samples, steps) over seeds."""

    model: str
    method: str
    num_samples: int
    steps: int
    metric: str
    mean: float
    std: float
    n: int


RUN_LEVEL_FILTERS = ("seed", "reference", "evaluator_version")


def metric_aggregates(s: Session, *, model: str | None = None,
                      metrics: Sequence[str] | None = None, primary_only: bool = False,
                      where: Mapping[str, Any] | None = None) -> list[AggregateRow]:
    """Mean, population std and n over seeds, per (model, method, num_samples, steps,
    metric), computed in SQL. ``primary_only``: only the registry's primary metrics.

    Two passes over the covering index (metric, series, value): the group means, then the
    mean squared deviation from them (robust, unlike ``avg(v*v) - avg(v)^2``). When a
    generation run has several succeeded evaluations (or run-level filters are given), only
    the newest matching evaluation of each generation run counts, as in
    :func:`select_method_results`.
    """
    where = dict(where or {})
    names = _canonical_names(metrics)
    mv = MetricValue.__table__.c
    conn = s.connection()  # Core rows: no ORM result processing over ~10^5-10^6 rows
    conds = []
    metric_filter = []
    if names is not None:
        metric_filter.append(MetricDefinition.name.in_(names))
    if primary_only:
        metric_filter.append(MetricDefinition.primary.is_(True))
    if metric_filter:
        conds.append(mv.metric_pk.in_(select(MetricDefinition.id).where(*metric_filter)))
    series_where = {k: v for k, v in where.items() if k not in RUN_LEVEL_FILTERS}
    if model is not None:
        series_where["model"] = model
    if series_where:
        conds.append(mv.series_pk.in_(
            select(Series.id).join(Model, Model.id == Series.model_pk)
            .join(MethodRow, MethodRow.id == Series.method_pk)
            .where(*where_clauses(series_where))))
    run_where = {k: v for k, v in where.items() if k in RUN_LEVEL_FILTERS}
    repeated = conn.execute(select(EvaluationRun.generation_run_pk)
                         .where(EvaluationRun.status == "succeeded")
                         .group_by(EvaluationRun.generation_run_pk)
                         .having(func.count() > 1).limit(1)).first() is not None
    run_conds = []
    if run_where or repeated:
        newest = (select(func.max(EvaluationRun.id))
                  .join(GenerationRun, GenerationRun.id == EvaluationRun.generation_run_pk)
                  .where(EvaluationRun.status == "succeeded", *where_clauses(run_where))
                  .group_by(EvaluationRun.generation_run_pk))
        run_conds.append(mv.evaluation_run_pk.in_(newest))
    means = (select(mv.metric_pk, mv.series_pk, func.avg(mv.value).label("mean"),
                    func.count().label("n"))
             .where(*conds, *run_conds).group_by(mv.metric_pk, mv.series_pk)
             .cte("means").prefix_with("MATERIALIZED"))
    x = MetricValue.__table__.alias("x")
    dev = x.c.value - means.c.mean
    var = (select(func.avg(dev * dev).cast(Float))
           .where(x.c.metric_pk == means.c.metric_pk, x.c.series_pk == means.c.series_pk,
                  *[_rebind(c, x) for c in run_conds])
           .scalar_subquery())
    rows = conn.execute(select(means.c.metric_pk, means.c.series_pk, means.c.mean, var,
                            means.c.n)).all()
    wanted = {r[1] for r in rows}
    series = {pk: rest for pk, *rest in conn.execute(
        select(Series.id, Model.model_id, MethodRow.name, Series.num_samples, Series.steps)
        .join(Model, Model.id == Series.model_pk)
        .join(MethodRow, MethodRow.id == Series.method_pk)
        .where(Series.id.in_(wanted) if len(wanted) < 5000 else true()))}
    metric_names = {pk: name for pk, name in conn.execute(
        select(MetricDefinition.id, MetricDefinition.name))}
    sqrt = math.sqrt
    return [AggregateRow(*series[series_pk], metric_names[metric_pk], mean,
                         sqrt(v) if v > 0 else 0.0, n)
            for metric_pk, series_pk, mean, v, n in rows]


def _rebind(cond, alias):
    """A condition on metric_values rewritten onto an alias of it."""
    from sqlalchemy.sql.util import ClauseAdapter

    return ClauseAdapter(alias).traverse(cond)
