"""Read-side queries: method results for leaderboards and reports, aggregates over seeds.

Per-seed values are the source of truth; ``metric_summaries`` (:mod:`bdgen.store.summaries`)
holds their aggregates, rewritten by every write that changes them. The paths give the same
numbers (``Aggregate.of``: numpy float64 mean, population std, values in seed order):

* :func:`select_method_results` fetches per-seed values and aggregates them, building the
  :class:`MethodResult` objects that compare, report and check render (they show or test
  per-seed values);
* :func:`select_summary_results` builds the same results from the summaries, without
  per-seed values: what the leaderboard ranks (Welch's test needs only mean, std and n);
* :func:`metric_aggregates` returns plain (mean, std, n) rows: from the summaries, or in
  SQL when run-level filters change which evaluations count.
"""

from __future__ import annotations

import gc
import math
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import PurePath
from typing import Any, NamedTuple

from sqlalchemy import Float, Select, func, or_, select, true
from sqlalchemy.orm import Session

from bdgen.diffusion.method import Method as MethodSpec
from bdgen.errors import BdgenError
from bdgen.eval.aggregate import Aggregate, MethodResult
from bdgen.eval.registry import COMPOSITES, lookup
from bdgen.store.engine import fetch_all
from bdgen.store.models import (
    DenoisingEvaluation,
    DenoisingValue,
    EvaluationRun,
    GenerationRun,
    MetricDefinition,
    MetricSummary,
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


class _SeriesRow(NamedTuple):
    id: int
    model_pk: int
    model_id: str
    version: str
    noise_schedule: str
    checkpoint_path: str | None
    checkpoint_sha256: str | None
    legacy_label: str | None
    name: str
    num_samples: int
    steps: int


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
    parts = _Parts(_denoising(s, {g.model.model_pk for g in groups.values()}))
    # 4. assemble
    out = []
    for key in sorted(groups):
        g = groups[key]
        seeds = tuple(sorted(g.eval_by_seed))
        per_metric: dict[str, list[float]] = defaultdict(list)
        for seed in seeds:
            for name, v in values.get(g.eval_by_seed[seed], {}).items():
                per_metric[name].append(v)
        aggs = {n: Aggregate.of(per_metric[n]) for n in sorted(per_metric, key=_metric_order)}
        out.append(_result(g, seeds, aggs, parts))
    return out


def _denoising(s: Session, model_pks: set[int]) -> dict[tuple[int, str], dict[str, float]]:
    """``{(model_pk, scope): {metric: value}}`` of the succeeded denoising evaluations."""
    denoising: dict[tuple[int, str], dict[str, float]] = defaultdict(dict)
    dq = (select(DenoisingEvaluation.model_pk, DenoisingEvaluation.scope,
                 MetricDefinition.name, DenoisingValue.value)
          .join(DenoisingValue,
                DenoisingValue.denoising_evaluation_pk == DenoisingEvaluation.id)
          .join(MetricDefinition, MetricDefinition.id == DenoisingValue.metric_pk)
          .where(DenoisingEvaluation.status == "succeeded"))
    if len(model_pks) < 5000:
        dq = dq.where(DenoisingEvaluation.model_pk.in_(model_pks))
    for mpk, scope, name, value in s.execute(dq):
        if mpk in model_pks:
            denoising[(mpk, scope)][name] = value
    return denoising


class _Parts:
    """Per-method and per-model pieces of results, computed once (not once per result)."""

    def __init__(self, denoising: Mapping[tuple[int, str], dict[str, float]]):
        self._denoising = denoising
        self._methods: dict[str, tuple[MethodSpec, dict, dict]] = {}
        self._models: dict[int, tuple[dict, str | None]] = {}
        self._den: dict[tuple[int, str], dict[str, float]] = {}

    def method(self, name: str) -> tuple[MethodSpec, dict, dict]:
        got = self._methods.get(name)
        if got is None:
            spec = MethodSpec.parse(name)
            got = self._methods[name] = (spec, spec.legacy_config(), spec.fields())
        return got

    def model(self, m: Any) -> tuple[dict, str | None]:
        got = self._models.get(m.model_pk)
        if got is None:
            got = self._models[m.model_pk] = (
                {"model_id": m.model_id, "version": m.version,
                 "noise_schedule": m.noise_schedule, "legacy_label": m.legacy_label,
                 "checkpoint_sha256": m.checkpoint_sha256},
                PurePath(m.checkpoint_path).name if m.checkpoint_path else None)
        return got

    def denoising(self, model_pk: int, method: str) -> dict[str, float]:
        """Method-scoped block first (legacy imports), else the model-level one."""
        key = (model_pk, method)
        got = self._den.get(key)
        if got is None:
            den = self._denoising.get(key) or self._denoising.get((model_pk, ""), {})
            got = self._den[key] = dict(sorted(den.items()))
        return got


def _result(g: _Group, seeds: tuple[int, ...], aggs: dict[str, Aggregate], parts: _Parts
            ) -> MethodResult:
    """The :class:`MethodResult` of one series (both result paths build it here)."""
    spec, legacy_config, fields = parts.method(g.method)
    model_fields, checkpoint = parts.model(g.model)
    config = {"seeds": list(seeds), "num_samples": g.num_samples,
              "sampling_steps": g.steps, **legacy_config, "checkpoint": checkpoint,
              "is_v2": spec.v2}
    return MethodResult(
        model=g.model.model_id, method=g.method, config=config, metrics=aggs, seeds=seeds,
        model_fields=dict(model_fields), method_fields=dict(fields),
        run_ids={seed: str(g.eval_by_seed[seed]) for seed in seeds},
        mlflow_run_ids=dict(sorted(g.mlflow.items())) if g.mlflow else {},
        denoising=dict(parts.denoising(g.model.model_pk, g.method)))


def select_summary_results(s: Session, *, model: str | None = None,
                           where: Mapping[str, Any] | None = None, min_seeds: int = 1,
                           metrics: Sequence[str] | None = None) -> list[MethodResult]:
    """:func:`select_method_results` from ``metric_summaries``: the same results (same
    means, population stds, n, seeds and run ids), without the per-seed values
    (``Aggregate.values`` is empty). Composites whose parts are all loaded come with the
    store's per-seed-product spread. Run-level filters (seed, reference, evaluator version)
    change which evaluations count, so they are refused here: use the per-seed path.

    Built for ~10^4 results from ~10^5 rows: plain DBAPI rows, and no cyclic garbage
    collection while the (acyclic) results are built.
    """
    where = dict(where or {})
    run_level = sorted(set(where) & set(RUN_LEVEL_FILTERS))
    if run_level:
        raise BdgenError(f"filter {run_level[0]!r} changes which evaluations count: "
                         "summaries cannot answer it (use method_results)")
    names = _canonical_names(metrics)
    if model is not None:
        where["model"] = model
    conn = s.connection()
    with _paused_gc():
        series_q = (select(Series.id, Model.id.label("model_pk"), Model.model_id,
                           Model.version, Model.noise_schedule, Model.checkpoint_path,
                           Model.checkpoint_sha256, Model.legacy_label, MethodRow.name,
                           Series.num_samples, Series.steps)
                    .join(Model, Model.id == Series.model_pk)
                    .join(MethodRow, MethodRow.id == Series.method_pk)
                    .where(*where_clauses(where)))
        series = {r[0]: _SeriesRow._make(r) for r in fetch_all(conn, series_q)}
        if not series:
            return []
        in_series = None
        if where:
            in_series = (select(Series.id).join(Model, Model.id == Series.model_pk)
                         .join(MethodRow, MethodRow.id == Series.method_pk)
                         .where(*where_clauses(where)))
        # 1. the evaluation runs that count (seeds, run ids): the newest succeeded
        #    evaluation of each succeeded generation run
        gen, ev = GenerationRun.__table__.c, EvaluationRun.__table__.c
        runs_q = (select(ev.id, gen.series_pk, gen.seed, ev.mlflow_run_id)
                  .join_from(EvaluationRun.__table__, GenerationRun.__table__,
                             gen.id == ev.generation_run_pk)
                  .where(ev.status == "succeeded", gen.status == "succeeded")
                  .order_by(ev.id))
        if in_series is not None:
            runs_q = runs_q.where(gen.series_pk.in_(in_series))
        groups: dict[int, _Group] = {}
        for ev_id, series_pk, seed, mlflow_id in fetch_all(conn, runs_q):
            g = groups.get(series_pk)
            if g is None:
                r = series[series_pk]
                g = groups[series_pk] = _Group(r, r.name, r.num_samples, r.steps, {}, {})
            # (series, seed) is one generation run; ids ascend, so its newest one wins
            g.eval_by_seed[seed] = ev_id
            if mlflow_id:
                g.mlflow[seed] = mlflow_id
            elif g.mlflow:
                g.mlflow.pop(seed, None)
        if min_seeds > 1:
            groups = {k: g for k, g in groups.items() if len(g.eval_by_seed) >= min_seeds}
        if not groups:
            return []
        # 2. their summaries, metric by metric in display order (one key range each)
        c = MetricSummary.__table__.c
        got: dict[int, dict[str, Aggregate]] = defaultdict(dict)
        if names is None:
            sq = select(c.series_pk, c.metric, c.mean, c.std, c.n)
            if in_series is not None:
                sq = sq.where(c.series_pk.in_(in_series))
            rows = sorted(fetch_all(conn, sq), key=lambda r: (
                r[1] in COMPOSITES, _metric_order(r[1])))
            for series_pk, metric, mean, std, n in rows:
                got[series_pk][metric] = Aggregate(mean, std, n, ())
        else:
            wanted = sorted(set(names), key=_metric_order) + [
                k for k, parts in COMPOSITES.items() if set(names).issuperset(parts)]
            for metric in wanted:
                sq = select(c.series_pk, c.mean, c.std, c.n).where(c.metric == metric)
                if in_series is not None:
                    sq = sq.where(c.series_pk.in_(in_series))
                for series_pk, mean, std, n in fetch_all(conn, sq):
                    got[series_pk][metric] = Aggregate(mean, std, n, ())
        # 3. denoising, per model
        parts = _Parts(_denoising(s, {g.model.model_pk for g in groups.values()}))
        # 4. assemble, in the order of select_method_results
        out = []
        for series_pk, g in sorted(groups.items(), key=lambda kv: (
                kv[1].model.model_id, kv[1].method, kv[1].num_samples, kv[1].steps)):
            aggs = got.get(series_pk, {})  # metrics in display order, composites last
            for name, names_ in COMPOSITES.items():
                spread = aggs.get(name)
                if spread is None:
                    continue
                if all(p in aggs for p in names_):
                    # displayed mean: the product of the summary means (spec §7.7), as
                    # bdgen.report.metrics computes it; spread: the per-seed products'
                    aggs[name] = Aggregate(math.prod(aggs[p].mean for p in names_),
                                           spread.std, spread.n, ())
                else:
                    del aggs[name]
            out.append(_result(g, tuple(sorted(g.eval_by_seed)), aggs, parts))
        return out


@contextmanager
def _paused_gc() -> Iterator[None]:
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
    metric). ``primary_only``: only the registry's primary metrics.

    Without run-level filters these are the stored ``metric_summaries`` rows (exactly
    :meth:`Aggregate.of` of the counted per-seed values). Run-level filters (seed, reference,
    evaluator version) change which evaluations count, so then they are computed in SQL:
    the newest matching succeeded evaluation of each succeeded generation run, two passes
    over the covering index (metric, series, value): the group means, then the mean squared
    deviation from them (robust, unlike ``avg(v*v) - avg(v)^2``).
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
    metric_names = {pk: name for pk, name in conn.execute(  # noqa: C416 (a Result has keys())
        select(MetricDefinition.id, MetricDefinition.name))}
    sqrt = math.sqrt
    return [AggregateRow(*series[series_pk], metric_names[metric_pk], mean,
                         sqrt(v) if v > 0 else 0.0, n)
            for metric_pk, series_pk, mean, v, n in rows]


def _summary_aggregates(conn, metric_filter: list, series_where: dict) -> list[AggregateRow]:
    """:func:`metric_aggregates` read from ``metric_summaries`` (stored metrics only, no
    composites)."""
    c = MetricSummary.__table__.c
    q = (select(Model.model_id, MethodRow.name, Series.num_samples, Series.steps, c.metric,
                c.mean, c.std, c.n)
         .join_from(MetricSummary.__table__, Series.__table__, Series.id == c.series_pk)
         .join(Model, Model.id == Series.model_pk)
         .join(MethodRow, MethodRow.id == Series.method_pk)
         .where(c.metric.in_(select(MetricDefinition.name).where(*metric_filter)),
                *where_clauses(series_where)))
    with _paused_gc():
        return list(map(AggregateRow._make, fetch_all(conn, q)))


def _rebind(cond, alias):
    """A condition on metric_values rewritten onto an alias of it."""
    from sqlalchemy.sql.util import ClauseAdapter

    return ClauseAdapter(alias).traverse(cond)
