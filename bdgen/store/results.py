"""Results for leaderboards and reports: one :class:`MethodResult` per (model, method,
num_samples, steps), aggregated over seeds.

Per-seed values are the source of truth; ``metric_summaries`` (:mod:`bdgen.store.summaries`)
holds their aggregates, rewritten by every write that changes them. Both paths give the
same numbers (``Aggregate.of``: numpy float64 mean, population std, values in seed order):

* :func:`select_method_results` fetches per-seed values and aggregates them: what compare,
  report and check render (they show or test per-seed values);
* :func:`select_summary_results` builds the same results from the summaries, without
  per-seed values: what the leaderboard ranks (Welch's test needs only mean, std and n).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, NamedTuple

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from bdgen.diffusion.method import Method as MethodSpec
from bdgen.errors import BdgenError
from bdgen.eval.aggregate import Aggregate, MethodResult
from bdgen.eval.registry import COMPOSITES
from bdgen.store.base import StoreBase
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
    table,
)
from bdgen.store.models import Method as MethodRow
from bdgen.store.queries import (
    RUN_LEVEL_FILTERS,
    AggregateRow,
    canonical_names,
    metric_aggregates,
    metric_order,
    paused_gc,
    where_clauses,
)
from bdgen.store.results_import import IMPORTED_V1_EVALUATOR


class Results(StoreBase):
    """Result queries (read-only sessions)."""

    def method_results(self, model: str | None = None, where: Mapping[str, Any] | None = None,
                       min_seeds: int = 1,
                       metrics: Sequence[str] | None = None) -> list[MethodResult]:
        """Per (model, method, num_samples, steps): metrics aggregated over seeds.

        ``where``: equality filters on model fields (model, version, noise_schedule), method
        fields (method, unmasking, top_p, temperature, strategy, eta, t_switch, v2) or run
        fields (seed, num_samples, steps, reference, evaluator_version); a list value means
        "any of". ``metrics``: restrict to these metrics (canonical names or legacy keys).
        Only succeeded evaluations count; with several evaluations of one generation run the
        newest wins. Aggregates are :meth:`Aggregate.of` (mean, population std) of the
        per-seed values.
        """
        with self.read_session() as s:
            results = select_method_results(s, model=model, where=dict(where or {}),
                                            min_seeds=min_seeds, metrics=metrics)
            _flag_v1_upgraded(s, results)
            return results

    def summary_results(self, model: str | None = None,
                        where: Mapping[str, Any] | None = None, min_seeds: int = 1,
                        metrics: Sequence[str] | None = None) -> list[MethodResult]:
        """:meth:`method_results` read from the stored per-series summaries: the same means,
        population stds, n, seeds and run ids, without per-seed values (``Aggregate.values``
        is empty), so a whole-store leaderboard reads ~10^5 rows, not ~10^6. Composites whose
        parts are requested come with the spread of their per-seed products. With a
        run-level filter (seed, reference, evaluator_version) it answers from the per-seed
        values instead (those filters change which evaluations count).
        """
        where = dict(where or {})
        with self.read_session() as s:
            query = (select_method_results if set(where) & set(RUN_LEVEL_FILTERS)
                     else select_summary_results)
            return query(s, model=model, where=where, min_seeds=min_seeds, metrics=metrics)

    def metric_aggregates(self, model: str | None = None,
                          metrics: Sequence[str] | None = None, primary_only: bool = False,
                          where: Mapping[str, Any] | None = None) -> list[AggregateRow]:
        """Mean, population std and n over seeds per (model, method, num_samples, steps,
        metric): see :func:`bdgen.store.queries.metric_aggregates`."""
        with self.read_session() as s:
            return metric_aggregates(s, model=model, metrics=metrics,
                                     primary_only=primary_only, where=where)


def _flag_v1_upgraded(s: Session, results: Sequence[MethodResult]) -> None:
    """Set ``upgraded_from_v1`` on results that count an evaluation imported from a format
    v1 file, so the comparison can mark and footnote them. Few run ids: primary-key
    lookups; many (a whole-store report): one scan for the rare v1 rows."""
    ids = {int(i) for r in results for i in r.run_ids.values()}
    if not ids:
        return
    q = select(EvaluationRun.id).where(EvaluationRun.evaluator_version == IMPORTED_V1_EVALUATOR)
    if len(ids) <= 5000:
        q = q.where(EvaluationRun.id.in_(ids))
    v1 = set(s.scalars(q))
    for r in results:
        r.upgraded_from_v1 = any(int(i) in v1 for i in r.run_ids.values())


def _runs_query(model: str | None, where: Mapping[str, Any]) -> Select:
    q = (select(EvaluationRun.id, EvaluationRun.generation_run_pk, EvaluationRun.mlflow_run_id,
                GenerationRun.seed, Series.num_samples, Series.steps, Series.constraint_set,
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
    constraint_set: str


@dataclass
class _Group:
    model: Any
    method: str
    num_samples: int
    steps: int
    eval_by_seed: dict[int, int]
    mlflow: dict[int, str]
    constraint_set: str = ""


def select_method_results(s: Session, *, model: str | None = None,
                          where: Mapping[str, Any] | None = None, min_seeds: int = 1,
                          metrics: Sequence[str] | None = None) -> list[MethodResult]:
    """See :meth:`Results.method_results`."""
    where = dict(where or {})
    names = canonical_names(metrics)
    # 1. the evaluation runs that count: newest succeeded one per generation run
    newest: dict[int, Any] = {}
    for r in s.execute(_runs_query(model, where).order_by(EvaluationRun.id)):
        newest[r.generation_run_pk] = r
    groups: dict[tuple, _Group] = {}
    for r in newest.values():
        key = (r.model_id, r.name, r.num_samples, r.steps, r.constraint_set)
        g = groups.get(key)
        if g is None:
            g = groups[key] = _Group(r, r.name, r.num_samples, r.steps, {}, {},
                                     r.constraint_set)
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
        aggs = {n: Aggregate.of(per_metric[n]) for n in sorted(per_metric, key=metric_order)}
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
    if g.constraint_set:
        n = sum(1 for k in aggs if k.startswith("constraint/satisfaction_")) - int(
            "constraint/satisfaction_overall" in aggs)
        config.update(num_constraints=n, constraint_set=g.constraint_set)
    return MethodResult(
        model=g.model.model_id, method=g.method, config=config, metrics=aggs, seeds=seeds,
        model_fields=dict(model_fields), method_fields=dict(fields),
        run_ids={seed: str(g.eval_by_seed[seed]) for seed in seeds},
        mlflow_run_ids=dict(sorted(g.mlflow.items())) if g.mlflow else {},
        denoising=dict(parts.denoising(g.model.model_pk, g.method)),
        constraint_set=g.constraint_set)


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
    names = canonical_names(metrics)
    if model is not None:
        where["model"] = model
    conn = s.connection()
    with paused_gc():
        series_q = (select(Series.id, Model.id.label("model_pk"), Model.model_id,
                           Model.version, Model.noise_schedule, Model.checkpoint_path,
                           Model.checkpoint_sha256, Model.legacy_label, MethodRow.name,
                           Series.num_samples, Series.steps, Series.constraint_set)
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
        gen, ev = table(GenerationRun).c, table(EvaluationRun).c
        runs_q = (select(ev.id, gen.series_pk, gen.seed, ev.mlflow_run_id)
                  .join_from(table(EvaluationRun), table(GenerationRun),
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
                g = groups[series_pk] = _Group(r, r.name, r.num_samples, r.steps, {}, {},
                                               r.constraint_set)
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
        c = table(MetricSummary).c
        got: dict[int, dict[str, Aggregate]] = defaultdict(dict)
        if names is None:
            sq = select(c.series_pk, c.metric, c.mean, c.std, c.n)
            if in_series is not None:
                sq = sq.where(c.series_pk.in_(in_series))
            rows = sorted(fetch_all(conn, sq), key=lambda r: (
                r[1] in COMPOSITES, metric_order(r[1])))
            for series_pk, metric, mean, std, n in rows:
                got[series_pk][metric] = Aggregate(mean, std, n, ())
        else:
            wanted = sorted(set(names), key=metric_order) + [
                k for k, parts in COMPOSITES.items() if set(names).issuperset(parts)]
            for metric in wanted:
                mq = select(c.series_pk, c.mean, c.std, c.n).where(c.metric == metric)
                if in_series is not None:
                    mq = mq.where(c.series_pk.in_(in_series))
                for series_pk, mean, std, n in fetch_all(conn, mq):
                    got[series_pk][metric] = Aggregate(mean, std, n, ())
        # 3. denoising, per model
        parts = _Parts(_denoising(s, {g.model.model_pk for g in groups.values()}))
        # 4. assemble, in the order of select_method_results
        out = []
        for series_pk, g in sorted(groups.items(), key=lambda kv: (
                kv[1].model.model_id, kv[1].method, kv[1].num_samples, kv[1].steps,
                kv[1].constraint_set)):
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


