"""Leaderboard and compare latency on a large results store (SQLite).

    .venv/bin/python bench/leaderboard.py                  # 100,000 evaluation runs
    .venv/bin/python bench/leaderboard.py --runs 20000     # scaled down
    .venv/bin/python bench/leaderboard.py --db /tmp/lb.db --keep   # keep / reuse the store

Layout (as bench/store.py): 100 methods x 5 seeds per model, as many models as the run count
needs (200 for 100,000 runs); each evaluation has the 46 legacy per-seed scalars + 4
stratified keys (random values). Generation runs are bulk-inserted as bench/store.py does,
evaluations go through ``Store.record_evaluations``. An existing ``--db`` with evaluation
runs is reused as is.

Figures (median of repeats, in-process, warm imports):
* ``leaderboard`` (profile ``preferred``): store query (per-series summaries, as the command)
  + ranking + terminal table;
* ``leaderboard --profile default`` (no field constraints to push down: every result loaded);
* ``leaderboard --model M`` (one model, default profile);
* ``compare A B`` (two methods across all models, and two model/method labels);
and the wall time of the ``bdgen leaderboard`` / ``bdgen compare`` commands as subprocesses
(Python start-up and imports included). Aim: < 1 s.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import _store_layout as layout  # noqa: E402

from bdgen.store.api import Store  # noqa: E402
from bdgen.store.models import GenerationRun  # noqa: E402


def build(db: str, runs: int, batch: int = 2000) -> None:
    store = Store.open(db)
    names = layout.methods()
    method_pks = [store.get_or_create_method(n) for n in names]
    n_models = max(1, -(-runs // (len(names) * len(layout.SEEDS))))
    model_pks = [store.get_or_create_model(m, "v1", "loglinear")
                 for m in layout.model_ids(n_models)]
    t0 = time.perf_counter()
    gids: list[int] = []
    with store.session() as s:
        table = GenerationRun.__table__
        for mpk in model_pks:
            series = [store._series(s, mpk, ppk, 1000, 100).id for ppk in method_pks]
            rows = layout.generation_rows(series, runs - len(gids))
            if rows:
                gids += list(s.execute(table.insert().returning(
                    table.c.id, sort_by_parameter_order=True), rows).scalars())
    rng = random.Random(0)
    keys = layout.METRIC_KEYS
    for i in range(0, len(gids), batch):
        store.record_evaluations([(g, {k: rng.random() for k in keys})
                                  for g in gids[i:i + batch]])
    layout.settle_sqlite(store)
    store.close()
    print(f"built: {len(gids):,} evaluation runs ({n_models} models x {len(names)} methods x "
          f"{len(layout.SEEDS)} seeds, {len(keys)} metrics each) in "
          f"{time.perf_counter() - t0:.0f} s")


#: The methods the compare cases put side by side.
COMPARED = ("llada_topp0.9_no_remask", "llada_topp0.9_remdm_confidence_tsw1.0")


def min_runs() -> int:
    """The fewest runs whose store has both compared methods for the first model (models
    are filled in order, method by method, seed by seed)."""
    return max(layout.methods().index(m) for m in COMPARED) * len(layout.SEEDS) + 1


def compare_model(db: str, model: str, a: str, b: str) -> str:
    """The model whose ``b`` the compare case sets against ``model``'s ``a``: the last
    model that has ``b`` (another one when the store has several; with fewer than two
    full models the later ones hold only the first methods, so it may be ``model``)."""
    from bdgen.pipeline.views import load_results

    found = {(r.model, r.method)
             for r in load_results(db, (), [f"method={a},{b}"], per_seed=False)}
    missing = [m for m in (a, b) if (model, m) not in found]
    if missing:
        raise SystemExit(f"{db}: model {model} has no results of {', '.join(missing)}; the "
                         f"compare cases need a store of at least {min_runs()} runs")
    return max(m for m, method in found if method == b)


def timed(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        out = None  # free the previous call's results outside the timed region
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=100_000)
    ap.add_argument("--db", default=None, help="SQLite path (default: a temp file)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary store")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if args.runs < min_runs():
        ap.error(f"--runs {args.runs}: the compare cases need at least {min_runs()} runs "
                 f"(the first model's {COMPARED[0]} and {COMPARED[1]})")

    tmp = None
    db = args.db
    if db is None:
        tmp = tempfile.mkdtemp(prefix="bdgen-bench-lb-")
        db = os.path.join(tmp, "lb.db")
    store = Store.open(db)
    n_eval = store.counts()["evaluation_runs"]
    store.close()
    if n_eval == 0:
        build(db, args.runs)
    else:
        print(f"reusing {db}: {n_eval:,} evaluation runs")

    from bdgen.pipeline.views import load_results, settle_results
    from bdgen.report.profiles import load_profile
    from bdgen.report.ranking import rank
    from bdgen.report.tables import compare_table, leaderboard_table, render, resolve_names

    names = layout.methods()
    model = layout.model_ids(1)[0]
    a, b = COMPARED
    other = compare_model(db, model, a, b)

    def board(profile: str, models=()):
        prof = load_profile(profile)
        res = load_results(db, models, (), 1, metrics=prof.metrics,
                           per_seed=False)  # as `bdgen leaderboard`: the store's summaries
        settle_results()
        return len(res), render(leaderboard_table(rank(res, prof)), "table")

    def cmp(x: str, y: str, labels: bool = True):
        """What ``bdgen compare`` loads: the named methods (and models, for labels)."""
        where = [f"method={x.rsplit('/', 1)[-1]},{y.rsplit('/', 1)[-1]}"]
        if labels:
            where.append(f"model={x.rsplit('/', 1)[0]},{y.rsplit('/', 1)[0]}")
        res = load_results(db, (), where)
        return len(res), render(compare_table(resolve_names([x, y], res)), "table")

    assert a in names and b in names
    cases = [
        ("leaderboard (preferred)", lambda: board("preferred")),
        ("leaderboard --profile default (all results)", lambda: board("default")),
        ("leaderboard --model M (default profile)", lambda: board("default", (model,))),
        ("leaderboard --model M (preferred)", lambda: board("preferred", (model,))),
        ("compare A B (labels, one model each)",
         lambda: cmp(f"{model}/{a}", f"{other}/{b}")),
    ]
    print(f"in-process latency (median of {args.repeat}):")
    for label, fn in cases:
        t, (n, _) = timed(fn, args.repeat)
        print(f"  {label:<48} {t * 1000:8.0f} ms  ({n:,} (model, method) results loaded)")

    env = dict(os.environ, BDGEN_DB_URL=db)
    bdgen = [str(Path(sys.executable).parent / "bdgen")]
    cmds = [["leaderboard"], ["leaderboard", "--profile", "default", "--top", "10"],
            ["compare", f"{model}/{a}", f"{model}/{b}"]]
    print("command wall time (subprocess, imports included):")
    for cmd in cmds:
        def go(cmd=cmd):
            subprocess.run(bdgen + cmd, env=env, check=True, capture_output=True, cwd=ROOT)
        t, _ = timed(go, args.repeat)
        print(f"  bdgen {' '.join(cmd):<58} {t * 1000:8.0f} ms")
    if tmp and not args.keep:
        for f in Path(tmp).iterdir():
            f.unlink()
        os.rmdir(tmp)
    elif tmp:
        print(f"kept {db}")


if __name__ == "__main__":
    main()
