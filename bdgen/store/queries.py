"""Filters and aggregates over the store's results.

``where`` filters (:data:`WHERE_COLUMNS`) are equality conditions on model, method and run
fields; run-level ones (seed, reference, evaluator version) change which evaluations count.
:func:`metric_aggregates` returns plain (mean, std, n) rows over seeds: from the stored
summaries (:mod:`bdgen.store.summaries`), or in SQL when run-level filters apply. Whole
results (:class:`MethodResult`) are built by :mod:`bdgen.store.results`.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cache
from typing import Any, NamedTuple

from sqlalchemy import Connection, Float, func, or_, select, true
from sqlalchemy.orm import Session

from bdgen.errors import BdgenError
from bdgen.eval.registry import lookup
from bdgen.store.engine import fetch_all
from bdgen.store.models import (
    EvaluationRun,
    GenerationRun,
    MetricDefinition,
    MetricSummary,
    MetricValue,
    Model,
    Series,
    table,
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
    "constraint_set": Series.constraint_set,
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
        if key == "constraint_set":
            conds = [_constraint_set_clause(v) for v in values]
        else:
            conds = [col.is_(None) if v is None else col == v for v in values]
        out.append(conds[0] if len(conds) == 1 else or_(*conds))
    return out


def _constraint_set_clause(value: Any) -> Any:
    """``constraint_set=`` takes the identity, a prefix of at least 8 characters, or the
    ``cs-...`` tag the tables show; empty / none means "measured against no set"."""
    text = "" if value is None else str(value)
    if text.startswith("cs-"):
        text = text[3:]
    if text in ("", "none"):
        return Series.constraint_set == ""
    if len(text.removeprefix("legacy-")) < 8:
        raise BdgenError(f"filter constraint_set={value!r}: give at least 8 characters of "
                         "the identity")
    return Series.constraint_set.startswith(text, autoescape=True)


def canonical_names(metrics: Sequence[str] | None) -> list[str] | None:
    if metrics is None:
        return None
    out = []
    for m in metrics:
        try:
            out.append(lookup(m).name)
        except KeyError as exc:
            raise BdgenError(exc.args[0]) from None
    return out


@contextmanager
def paused_gc() -> Iterator[None]:
    """Cyclic GC off while many small acyclic objects are built (each full collection
    would rescan them all: ~40 % of a whole-store leaderboard load)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


@cache
def metric_order(name: str) -> tuple[int, str]:
    from bdgen.eval.registry import METRICS

    order = {n: i for i, n in enumerate(METRICS)}
    return (order.get(name, len(order)), name)


class AggregateRow(NamedTuple):
    """One leaderboard cell: a metric of (model, method, num_samples, steps, constraint set)
    over seeds."""

    model: str
    method: str
    num_samples: int
    steps: int
    metric: str
    mean: float
    std: float
    n: int
    constraint_set: str = ""  # of the series ("" = none), so two sets are two rows


RUN_LEVEL_FILTERS = ("seed", "reference", "evaluator_version")


def metric_aggregates(s: Session, *, model: str | None = None,
                      metrics: Sequence[str] | None = None, primary_only: bool = False,
                      where: Mapping[str, Any] | None = None) -> list[AggregateRow]:
    """Mean, population std and n over seeds, per (model, method, num_samples, steps,
    metric). ``primary_only``: only the registry's primary metrics.

    Without run-level filters these are the stored ``metric_summaries`` rows (exactly
    :meth:`Aggregate.of` of the counted per-seed values). Run-level filters (seed, reference,
    evaluator version) change which evaluations count, so then they are computed in SQL:
    the newest matching succeeded evaluation of each succeeded generation run, two passes
    over the covering index (metric, series, value): the group means, then the mean squared
    deviation from them (robust, unlike ``avg(v*v) - avg(v)^2``).
    """
    where = dict(where or {})
    names = canonical_names(metrics)
    mv = table(MetricValue).c
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
    if not run_where:
        return _summary_aggregates(conn, metric_filter, series_where)
    newest = (select(func.max(EvaluationRun.id))
              .join(GenerationRun, GenerationRun.id == EvaluationRun.generation_run_pk)
              .where(EvaluationRun.status == "succeeded", GenerationRun.status == "succeeded",
                     *where_clauses(run_where))
              .group_by(EvaluationRun.generation_run_pk))
    run_conds = [mv.evaluation_run_pk.in_(newest)]
    means = (select(mv.metric_pk, mv.series_pk, func.avg(mv.value).label("mean"),
                    func.count().label("n"))
             .where(*conds, *run_conds).group_by(mv.metric_pk, mv.series_pk)
             .cte("means").prefix_with("MATERIALIZED"))
    x = table(MetricValue).alias("x")
    dev = x.c.value - means.c.mean
    var = (select(func.avg(dev * dev).cast(Float))
           .where(x.c.metric_pk == means.c.metric_pk, x.c.series_pk == means.c.series_pk,
                  *[_rebind(c, x) for c in run_conds])
           .scalar_subquery())
    rows = conn.execute(select(means.c.metric_pk, means.c.series_pk, means.c.mean, var,
                            means.c.n)).all()
    wanted = {r[1] for r in rows}
    series: dict[int, list[Any]] = {pk: rest for pk, *rest in conn.execute(
        select(Series.id, Model.model_id, MethodRow.name, Series.num_samples, Series.steps,
               Series.constraint_set)
        .join(Model, Model.id == Series.model_pk)
        .join(MethodRow, MethodRow.id == Series.method_pk)
        .where(Series.id.in_(wanted) if len(wanted) < 5000 else true()))}
    metric_names = {pk: name for pk, name in conn.execute(  # noqa: C416 (a Result has keys())
        select(MetricDefinition.id, MetricDefinition.name))}
    sqrt = math.sqrt
    return [AggregateRow._make((*series[series_pk][:4], metric_names[metric_pk], mean,
                                sqrt(v) if v > 0 else 0.0, n, series[series_pk][4]))
            for metric_pk, series_pk, mean, v, n in rows]


def _summary_aggregates(conn: Connection, metric_filter: list,
                        series_where: dict) -> list[AggregateRow]:
    """:func:`metric_aggregates` read from ``metric_summaries`` (stored metrics only, no
    composites)."""
    c = table(MetricSummary).c
    q = (select(Model.model_id, MethodRow.name, Series.num_samples, Series.steps, c.metric,
                c.mean, c.std, c.n, Series.constraint_set)
         .join_from(table(MetricSummary), table(Series), Series.id == c.series_pk)
         .join(Model, Model.id == Series.model_pk)
         .join(MethodRow, MethodRow.id == Series.method_pk)
         .where(c.metric.in_(select(MetricDefinition.name).where(*metric_filter)),
                *where_clauses(series_where)))
    with paused_gc():
        return list(map(AggregateRow._make, fetch_all(conn, q)))


def _rebind(cond, alias):
    """A condition on metric_values rewritten onto an alias of it."""
    from sqlalchemy.sql.util import ClauseAdapter

    return ClauseAdapter(alias).traverse(cond)
