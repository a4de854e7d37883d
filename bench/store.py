"""Results-store benchmark: ingest rate and leaderboard aggregate latency at scale (SQLite).

    .venv/bin/python bench/store.py                 # 100,000 evaluation runs x 50 metrics
    .venv/bin/python bench/store.py --runs 20000    # scaled down
    .venv/bin/python bench/store.py --db postgresql+psycopg://...   # another backend

Layout: 100 methods x 5 seeds per model, as many models as the run count needs (200 models
for 100,000 runs); each evaluation has the 46 legacy per-seed scalars + 4 stratified keys.
Figures: ingest of evaluation runs in batches through ``Store.record_evaluations`` (runs/s,
one transaction per batch, the series' ``metric_summaries`` rewritten in it), and the latency
of the leaderboard aggregate (all methods x all primary metrics, mean / population std / n
over seeds) over the whole store and filtered to one model: read from ``metric_summaries``
(``metric_aggregates``), computed in SQL from the per-seed values (``metric_aggregates`` with
a run-level filter), through ``Store.summary_results`` (what the leaderboard ranks) and
``Store.method_results`` (per-seed values aggregated in Python). Aims: >= 2,000 runs/s;
< 3 s whole store; < 200 ms one model.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _store_layout as layout  # noqa: E402

from bdgen.eval.registry import METRICS  # noqa: E402
from bdgen.store.api import Store  # noqa: E402
from bdgen.store.models import GenerationRun, Series  # noqa: E402
from bdgen.store.queries import metric_aggregates  # noqa: E402
from bdgen.util.provenance import code_version  # noqa: E402


def timed(fn, repeat: int = 3) -> tuple[float, float, object]:
    """Median wall and CPU seconds of ``repeat`` calls, and the last result. CPU time is
    reported because the benchmark machine is shared (wall time includes waiting for it)."""
    walls, cpus, out = [], [], None
    for _ in range(repeat):
        out = None  # free the previous call's result outside the timed region
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=100_000, help="evaluation runs to ingest")
    ap.add_argument("--batch", type=int, default=1000, help="evaluation runs per transaction")
    ap.add_argument("--db", default=None, help="store URL or path (default: a temp SQLite file)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary store")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="bdgen-bench-store-")
    db = args.db or os.path.join(tmp, "bench.db")
    names = layout.methods()
    per_model = len(names) * len(layout.SEEDS)
    n_models = max(1, -(-args.runs // per_model))
    metric_keys = layout.METRIC_KEYS
    primary = [n for n, d in METRICS.items() if d.primary and d.group != "denoising"]
    print(f"store: {db}\ncode: {code_version()}")
    print(f"layout: {args.runs} evaluation runs = {n_models} models x {len(names)} methods x "
          f"{len(layout.SEEDS)} seeds (truncated), {len(metric_keys)} metrics each "
          f"({args.runs * len(metric_keys):,} metric rows); {len(primary)} primary metrics")

    store = Store.open(db)
    method_pks = [store.get_or_create_method(n) for n in names]
    models = layout.model_ids(n_models)
    model_pks = [store.get_or_create_model(m, "v1", "loglinear") for m in models]

    # generation runs (bulk, one statement per model)
    t0 = time.perf_counter()
    gids: list[int] = []
    with store.session() as s:
        table, st = GenerationRun.__table__, Series.__table__
        for mpk in model_pks:
            series = list(s.execute(st.insert().returning(st.c.id, sort_by_parameter_order=True),
                                    [{"model_pk": mpk, "method_pk": ppk, "num_samples": 1000,
                                      "steps": 100} for ppk in method_pks]).scalars())
            rows = layout.generation_rows(series, args.runs - len(gids))
            if not rows:
                break
            gids += list(s.execute(table.insert().returning(
                table.c.id, sort_by_parameter_order=True), rows).scalars())
    print(f"generation runs: {len(gids)} inserted in {time.perf_counter() - t0:.1f} s")

    # evaluation runs + metric values, in batches
    rng = random.Random(0)
    t0, c0 = time.perf_counter(), time.process_time()
    prep = 0.0
    for i in range(0, len(gids), args.batch):
        tp = time.perf_counter()
        batch = [(g, {k: rng.random() for k in metric_keys}) for g in gids[i:i + args.batch]]
        prep += time.perf_counter() - tp
        store.record_evaluations(batch)
    ingest = time.perf_counter() - t0 - prep
    cpu = time.process_time() - c0 - prep
    print(f"ingest: {len(gids)} evaluation runs in {ingest:.1f} s wall = "
          f"{len(gids) / ingest:,.0f} runs/s ({len(gids) * len(metric_keys) / ingest:,.0f} "
          f"metric rows/s; {len(gids) / cpu:,.0f} runs/s of process CPU time); batches of "
          f"{args.batch}; metric-dict generation excluded")
    layout.settle_sqlite(store)
    if store.engine.dialect.name == "sqlite":
        print(f"database file: {Path(db).stat().st_size / 1e6:,.0f} MB")
    elif store.engine.dialect.name == "postgresql":
        with store.engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")

    one = models[len(models) // 2]

    def sql(model=None, where=None):
        with store.read_session() as s:
            return metric_aggregates(s, model=model, primary_only=True, where=where)

    def show(label: str, wall: float, cpu: float, extra: str) -> None:
        print(f"{label}: {wall * 1000:,.0f} ms wall, {cpu * 1000:,.0f} ms CPU ({extra})")

    w, c, rows = timed(lambda: sql(), repeat=3)
    show("leaderboard aggregate, summaries, whole store", w, c,
         f"{len(rows):,} (model, method, metric) cells")
    w, c, rows = timed(lambda: sql(one), repeat=5)
    show("leaderboard aggregate, summaries, one model", w, c, f"{len(rows):,} cells")
    w, c, rows = timed(lambda: sql(where={"reference": "train"}), repeat=3)
    show("leaderboard aggregate, SQL over per-seed values (run-level filter), whole store",
         w, c, f"{len(rows):,} cells")
    w, c, res = timed(lambda: store.summary_results(metrics=primary), repeat=3)
    show("Store.summary_results(whole store, primary metrics)", w, c, f"{len(res):,} results")
    w, c, res = timed(lambda: store.method_results(model=one, metrics=primary), repeat=5)
    show("Store.method_results(model=one, primary metrics)", w, c, f"{len(res)} methods")
    w, c, res = timed(lambda: store.method_results(model=one), repeat=3)
    show("Store.method_results(model=one, all metrics)", w, c, f"{len(res)} methods")
    store.close()
    if not args.keep and args.db is None:
        for f in Path(tmp).iterdir():
            f.unlink()
        os.rmdir(tmp)


if __name__ == "__main__":
    main()
