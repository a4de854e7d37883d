"""``metric_summaries``: kept equal to the per-seed aggregates by every write, backfilled by
migration 0002 (and dropped by its downgrade), and giving the leaderboard the same output as
the per-seed path. Runs on SQLite and PostgreSQL (``store_url``)."""
# ruff: noqa: F811  (pytest fixtures imported from _store_support are redefined as arguments)

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import pytest
from _store_support import (  # noqa: F401  (fixtures)
    METHOD,
    MODEL,
    make_generation_run,
    store,
    store_url,
)
from scipy import stats
from sqlalchemy import inspect

from bdgen.errors import BdgenError
from bdgen.eval.aggregate import Aggregate
from bdgen.report import metrics as M
from bdgen.store import migrate, summaries
from bdgen.store.api import Store
from bdgen.store.engine import make_engine
from bdgen.store.queries import metric_aggregates

OTHER = "random_topp0.9_no_remask"
COMPOSITE = "novelty_x_mode_coverage_weighted"


def _metrics(i: int, **extra: float) -> dict[str, float]:
    return {"node_js": 0.01 * i + 0.003, "edge_tv": 0.5 - 0.02 * i, "novelty": 0.9 - 0.01 * i,
            "mode_coverage_weighted": 0.6 + 0.03 * (i % 3),
            "validity_by_num_rooms": {"7": {"overall": 1.0 - 0.1 * (i % 2)}}, **extra}


def assert_consistent(store: Store) -> None:
    """Stored summaries = recomputed now, and the summary path = the per-seed path."""
    with store.engine.connect() as conn:
        assert summaries.stored(conn) == summaries.expected(conn)
    per_seed = store.method_results()
    from_summaries = store.summary_results()
    assert [r.label for r in from_summaries] == [r.label for r in per_seed]
    for a, b in zip(per_seed, from_summaries):
        assert (a.seeds, a.run_ids, a.mlflow_run_ids, a.config, a.model_fields,
                a.method_fields, a.denoising) == (b.seeds, b.run_ids, b.mlflow_run_ids,
                                                  b.config, b.model_fields, b.method_fields,
                                                  b.denoising)
        assert set(b.metrics) - {COMPOSITE} == set(a.metrics)
        for name, agg in a.metrics.items():  # exact: the same arithmetic on the same values
            got = b.metrics[name]
            assert (got.mean, got.std, got.n) == (agg.mean, agg.std, agg.n), name
            assert got.values == ()
        want, got = M.value(a, COMPOSITE), M.value(b, COMPOSITE)
        assert (want is None) == (got is None)
        if want is not None:
            assert (got.mean, got.std, got.n) == (want.mean, want.std, want.n)


def test_summaries_follow_every_write(store):
    gids = [make_generation_run(store, seed=s) for s in (42, 123, 456, 789)]
    assert_consistent(store)  # generation runs without evaluations: no rows
    for i, gid in enumerate(gids[:3]):
        store.record_evaluation(gid, _metrics(i), mlflow_run_id=f"mlf{i}")
        assert_consistent(store)
    store.record_evaluation(gids[0], _metrics(7), replace=True)  # replaced values
    assert_consistent(store)
    store.record_evaluation(gids[1], _metrics(8), evaluator_version="bdgen-9")  # newer counts
    assert_consistent(store)
    # the newest succeeded evaluation counts: failing it brings the older one back
    newest = store.record_evaluation(gids[2], _metrics(9), evaluator_version="bdgen-9")
    store.fail_run(newest, "bad evaluator", kind="evaluation")
    assert_consistent(store)
    with pytest.raises(BdgenError):  # a failed write changes nothing
        store.record_evaluation(gids[3], {"node_js": float("nan")})
    assert_consistent(store)
    # bulk ingest, into this series and another one
    extra = make_generation_run(store, seed=1000)
    other = [make_generation_run(store, seed=s, method=OTHER) for s in (1, 2, 3)]
    store.record_evaluations([(extra, _metrics(4))] + [(g, _metrics(10 + i))
                                                       for i, g in enumerate(other)])
    assert_consistent(store)
    store.record_evaluation(gids[3], _metrics(5))  # takes the failed row over
    assert_consistent(store)
    # a failed generation run's evaluations stop counting; finishing it again restores them
    store.fail_run(gids[0], "disk lost")
    assert_consistent(store)
    with store.read_session() as s:
        assert {a.n for a in metric_aggregates(s, model=MODEL, where={"method": METHOD})} == {4}
    store.finish_generation_run(gids[0], "1" * 64, "/samples/42b.pt")
    assert_consistent(store)
    # a forced re-generation discards the seed's evaluations
    store.start_generation_run(MODEL, METHOD, 123, 100, 10, force=True)
    assert_consistent(store)
    with store.read_session() as s:
        rows = metric_aggregates(s, metrics=["node_js"], where={"method": METHOD})
    assert [a.n for a in rows] == [4]
    (r,) = store.summary_results(where={"method": METHOD})
    assert r.seeds == (42, 456, 789, 1000)


def test_pipeline_claim_takeover_keeps_summaries_exact(store):

    gid = make_generation_run(store, seed=1)
    store.record_evaluation(gid, _metrics(1))
    store.fail_run(gid, "samples corrupt")
    got = store.claim_generation_run(MODEL, METHOD, 1, 100, 10, stale_after=timedelta(0))
    assert got == gid
    assert_consistent(store)
    assert store.summary_results() == []


def test_composite_spread_needs_the_same_seeds(store):
    gids = [make_generation_run(store, seed=s) for s in (1, 2, 3)]
    for i, gid in enumerate(gids):
        m = _metrics(i)
        if i == 2:
            del m["novelty"]  # seed 3 lacks a part: no per-seed products
        store.record_evaluation(gid, m)
    assert_consistent(store)
    with store.engine.connect() as conn:
        assert COMPOSITE not in {r[1] for r in summaries.stored(conn)}
    (r,) = store.summary_results(metrics=["novelty", "mode_coverage_weighted"])
    assert COMPOSITE not in r.metrics  # falls back to error propagation, as the per-seed path
    store.record_evaluation(gids[2], _metrics(2), replace=True)
    assert_consistent(store)
    (r,) = store.summary_results(metrics=["novelty", "mode_coverage_weighted"])
    prods = [_metrics(i)["novelty"] * _metrics(i)["mode_coverage_weighted"] for i in range(3)]
    assert r.metrics[COMPOSITE].std == float(np.std(prods)) and r.metrics[COMPOSITE].n == 3
    assert r.metrics[COMPOSITE].mean == r.metrics["novelty"].mean * r.metrics[
        "mode_coverage_weighted"].mean
    (only,) = store.summary_results(metrics=["novelty"])  # composite only with all its parts
    assert set(only.metrics) == {"novelty"}


def test_summary_results_filters_as_method_results(store):
    for method in (METHOD, OTHER):
        for s in (1, 2, 3):
            store.record_evaluation(make_generation_run(store, seed=s, method=method,
                                                        num_samples=100 if s < 3 else 50),
                                    _metrics(s))
    store.get_or_create_model("v2-model", "v2", "cosine")
    g = store.start_generation_run("v2-model", METHOD, 5, 100, 10)
    store.finish_generation_run(g, "0" * 64, "/samples/v2.pt")
    store.record_evaluation(g, _metrics(5))
    cases = [{}, {"unmasking": "llada"}, {"version": "v2"}, {"num_samples": 100},
             {"model": [MODEL, "v2-model"], "top_p": "0.9"}, {"strategy": None}]
    for where in cases:
        for min_seeds in (1, 2):
            a = store.method_results(where=where, min_seeds=min_seeds, metrics=["node_js"])
            b = store.summary_results(where=where, min_seeds=min_seeds, metrics=["node_js"])
            assert [(r.label, r.seeds, r.metrics["node_js"].mean) for r in a] == [
                (r.label, r.seeds, r.metrics["node_js"].mean) for r in b], where
    assert store.summary_results(model="v2-model")[0].label == f"v2-model/{METHOD}"
    # run-level filters change which evaluations count: answered from per-seed values
    (r,) = store.summary_results(where={"seed": 5})
    assert r.metrics["node_js"].values == (_metrics(5)["node_js"],)


def test_migration_backfills_and_downgrade_drops(store_url):
    store = Store.open(store_url)
    try:
        for method in (METHOD, OTHER):
            for s in (1, 2, 3, 4, 5):
                store.record_evaluation(make_generation_run(store, seed=s, method=method),
                                        _metrics(s + len(method)))
        store.fail_run(store.record_evaluation(1, _metrics(0), evaluator_version="x"),
                       "bad", kind="evaluation")
        with store.engine.connect() as conn:
            before = summaries.stored(conn)
        assert len(before) == 2 * (5 + 1)  # 5 metrics + the composite per series
    finally:
        store.close()
    engine = make_engine(store_url)
    try:
        assert migrate.downgrade(engine, "0001") == "0001"
        with engine.connect() as conn:
            assert "metric_summaries" not in inspect(conn).get_table_names()
    finally:
        engine.dispose()
    store = Store.open(store_url)  # a store at the previous revision is upgraded on open
    try:
        assert migrate.current_revision(store.engine) == migrate.head_revision()
        with store.engine.connect() as conn:
            assert summaries.stored(conn) == before
        assert_consistent(store)
    finally:
        store.close()


def test_concurrent_writers_of_one_series_leave_exact_summaries(store_url):
    """Writers of the same series serialise their refreshes (PostgreSQL: a row lock on the
    series), so the last one sees every committed value."""
    import multiprocessing as mp

    from _store_support import worker_record

    store = Store.open(store_url)
    try:
        gids = [make_generation_run(store, seed=s) for s in range(40)]
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        procs = [ctx.Process(target=worker_record, args=(store_url, gids[i::4], queue))
                 for i in range(4)]
        for p in procs:
            p.start()
        results = [queue.get(timeout=300) for _ in procs]
        for p in procs:
            p.join(300)
        assert results == [("ok", 10)] * 4, results
        assert_consistent(store)
        with store.engine.connect() as conn:
            assert {r[2] for r in summaries.stored(conn)} == {40}
    finally:
        store.close()


@pytest.mark.parametrize("x, y", [
    ([0.72, 0.76, 0.80], [0.70, 0.75, 0.80]),
    ([0.1, 0.2, 0.4, 0.8, 1.6], [0.3, 0.31, 0.33]),
    ([1e-6, 3e-6], [2e-6, 2.5e-6, 2.7e-6, 9e-6]),
    ([5.0, 5.1, 4.9, 5.05, 4.95], [5.2, 5.3, 5.25, 5.22, 5.31]),
])
def test_welch_p_from_summary_equals_per_seed_test(x, y):
    """The leaderboard tests ties from (mean, population std, n) only: same p-value as
    Welch's test on the per-seed values."""
    a, b = Aggregate.of(x), Aggregate.of(y)
    from_summary = M.welch_p(Aggregate(a.mean, a.std, a.n), Aggregate(b.mean, b.std, b.n))
    per_seed = stats.ttest_ind(x, y, equal_var=False).pvalue
    assert from_summary is not None and math.isclose(from_summary, per_seed, rel_tol=0,
                                                     abs_tol=1e-12)
