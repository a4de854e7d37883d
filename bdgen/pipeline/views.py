"""What ``bdgen leaderboard|compare|report|check`` show: store queries + the report layer.

The CLI parses options and prints; the decisions live here: which ``--where`` keys the
store filters in SQL and which are applied in memory, which stored metrics a view needs
(composites -> their components), which results a ``compare`` or ``check`` names, and the
ranking profile (``auto`` falls back when nothing meets ``preferred``). Every view counts
exclusions the same way: the store never pre-filters on a profile's constraints, the ranking
checks them all (:attr:`bdgen.report.ranking.Ranking.exclusion_line`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from bdgen.errors import BdgenError
from bdgen.eval.aggregate import MethodResult
from bdgen.report.tables import Table


def load_results(db: str | None, models: Sequence[str] = (), where: Sequence[str] = (),
                 min_seeds: int = 1, metrics: Sequence[str] | None = None,
                 per_seed: bool = True) -> list[MethodResult]:
    """Store query + the report layer's filters.

    ``where`` keys the store can filter in SQL (method, model and run fields) are pushed
    down; other keys (e.g. fields only some models carry) are applied in memory. Unknown keys
    are an error listing the valid ones. ``metrics`` restricts the metrics loaded (composites
    are expanded into their components). ``per_seed=False`` reads the store's per-series
    summaries (same aggregates, no per-seed values: enough for ranking).
    """
    from bdgen.pipeline.store import open_store
    from bdgen.report.metrics import stored_metrics
    from bdgen.report.profiles import apply_where, check_where_keys, known_fields, split_where
    from bdgen.store.queries import WHERE_COLUMNS

    filters = split_where(where)
    sql_where = {k: v for k, v in filters.items() if k in WHERE_COLUMNS}
    rest = {k: v for k, v in filters.items() if k not in WHERE_COLUMNS}
    if len(models) > 1:
        sql_where["model"] = list(models)
    store = open_store(db, readonly=True)
    try:
        query = store.method_results if per_seed else store.summary_results
        results = query(model=models[0] if len(models) == 1 else None, where=sql_where,
                        min_seeds=min_seeds,
                        metrics=None if metrics is None else stored_metrics(metrics))
    finally:
        store.close()
    check_where_keys(rest, set(WHERE_COLUMNS) | set(known_fields(results)))
    return apply_where(results, rest, min_seeds)


def settle_results() -> None:
    """Move everything loaded so far out of the cyclic GC's reach: a whole-store load is
    ~10^5-10^6 acyclic objects that live until the command exits, and each full collection
    during ranking would rescan them all (~0.3 s). They are still freed by reference
    counting; only cyclic garbage that exists now would outlive a collection."""
    import gc

    gc.freeze()


def leaderboard_view(db: str | None, profile: str, metric_cols: Sequence[str] = (),
                     expect: str | None = None, alpha: float | None = None,
                     top: int | None = None, min_seeds: int = 1, where: Sequence[str] = (),
                     models: Sequence[str] = ()) -> Table:
    """The ranked table of ``bdgen leaderboard`` (``profile``: a name, a file or ``auto``)."""
    from bdgen.report.expectations import load_expectations, verdicts
    from bdgen.report.profiles import load_profile
    from bdgen.report.ranking import AUTO_PROFILE, DEFAULT_PROFILE, FALLBACK_PROFILE, rank_by
    from bdgen.report.tables import leaderboard_table

    names = [DEFAULT_PROFILE, FALLBACK_PROFILE] if profile == AUTO_PROFILE else [profile]
    profiles = [load_profile(n) for n in names]
    ex = load_expectations(expect) if expect else None
    needed = [m for p in profiles for m in p.metrics] + list(metric_cols) + (
        [e.metric for e in ex.items] if ex else [])
    results = load_results(db, models, where, min_seeds, metrics=needed, per_seed=False)
    settle_results()
    vs = {r.label: verdicts(r, ex) for r in results} if ex else None
    ranking = rank_by(results, profiles[0] if profile != AUTO_PROFILE else AUTO_PROFILE, alpha)
    return leaderboard_table(ranking, list(metric_cols) or None, vs, top)


def compare_view(db: str | None, names: Sequence[str], alpha: float = 0.05,
                 primary_only: bool = False, metric_rows: Sequence[str] = (),
                 min_seeds: int = 1, where: Sequence[str] = (),
                 models: Sequence[str] = ()) -> Table:
    """Side-by-side table of ``bdgen compare``: loads only the named methods (and models,
    for ``model/method`` labels) when every name parses; an unknown name reloads without
    narrowing so that the error lists the closest known names."""
    from bdgen.diffusion.method import Method
    from bdgen.report.tables import compare_table, resolve_names

    if len(names) < 2:
        raise BdgenError("compare needs at least two methods (or model/method labels)")
    methods = [n.rsplit("/", 1)[-1] for n in names]
    try:
        for m in methods:
            Method.parse(m)
        narrowed = list(where) + [f"method={m}" for m in methods]
        if all("/" in n for n in names) and not models:
            narrowed += [f"model={n.rsplit('/', 1)[0]}" for n in names]
    except BdgenError:
        narrowed = list(where)  # a model id among the names: load everything
    try:
        chosen = resolve_names(names, load_results(db, models, narrowed, min_seeds))
    except BdgenError:
        chosen = resolve_names(names, load_results(db, models, where, min_seeds))
    return compare_table(chosen, alpha, primary_only, list(metric_rows) or None)


def report_view(db: str | None, out_dir: str | os.PathLike | None, legacy: bool,
                profile: str, expect: str | None, primary_only: bool, html: bool,
                min_seeds: int = 1, where: Sequence[str] = (),
                models: Sequence[str] = ()) -> list[Path]:
    """Write ``comparison.md`` (and ``.html``) of ``bdgen report``; returns the paths."""
    from bdgen.report.document import write_report
    from bdgen.report.expectations import load_expectations
    from bdgen.report.profiles import load_profile
    from bdgen.report.ranking import AUTO_PROFILE

    prof = None if legacy else (profile if profile == AUTO_PROFILE else load_profile(profile))
    ex = load_expectations(expect) if expect and not legacy else None
    results = load_results(db, models, where, min_seeds)
    if not results:
        raise BdgenError("no results in the store match (import or evaluate first)")
    if out_dir is None:
        from bdgen.pipeline.workspace import Workspace

        out_dir = Workspace.find().reports_dir
    return write_report(results, out_dir, legacy=legacy, profile=prof, expectations=ex,
                        primary_only=primary_only, html=html)


def check_view(db: str | None, targets: Sequence[str], expect: str, min_seeds: int = 1,
               where: Sequence[str] = (), models: Sequence[str] = ()):
    """``(expectations, [(result, verdicts)])`` of ``bdgen check`` for METHOD|RUN targets."""
    from bdgen.report.expectations import load_expectations, verdicts
    from bdgen.report.tables import pick_targets

    ex = load_expectations(expect)
    chosen = pick_targets(targets, load_results(db, models, where, min_seeds))
    return ex, [(r, verdicts(r, ex)) for r in chosen]


RUN_COLUMNS = ("id", "model_id", "method", "seed", "num_samples", "steps", "status",
               "evaluation", "started_at")
MODEL_COLUMNS = ("model_id", "version", "noise_schedule", "dataset_id", "runs", "created_at")


def runs_view(db: str | None, where: Sequence[str] = (), limit: int | None = None) -> Table:
    """``bdgen runs``: the store's generation runs, newest first."""
    from bdgen.pipeline.store import open_store
    from bdgen.report.profiles import split_where
    from bdgen.report.tables import listing_table

    store = open_store(db, readonly=True)
    try:
        rows = store.list_runs(split_where(where), limit)
    finally:
        store.close()
    return listing_table(rows, "generation run(s)", RUN_COLUMNS)


def models_view(db: str | None, where: Sequence[str] = ()) -> Table:
    """``bdgen models``: the store's models with their run counts."""
    from bdgen.pipeline.store import open_store
    from bdgen.report.profiles import split_where
    from bdgen.report.tables import listing_table

    store = open_store(db, readonly=True)
    try:
        rows = store.list_models(split_where(where))
    finally:
        store.close()
    return listing_table(rows, "model(s)", MODEL_COLUMNS)
