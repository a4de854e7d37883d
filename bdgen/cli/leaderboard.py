"""``bdgen leaderboard``, ``bdgen compare``, ``bdgen report`` and ``bdgen check``.

Thin Click wrappers: results come from the store (``--db`` URL-or-path, else
``$BDGEN_DB_URL``, else the workspace's ``bdgen.db``); ranking, tables, documents and
verdicts are the pure functions of :mod:`bdgen.report`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import click

from bdgen.errors import BdgenError

DB_HELP = ("Store: a SQLAlchemy URL or a SQLite file path "
           "(default: $BDGEN_DB_URL, else the workspace's bdgen.db).")


def _common(f):
    f = click.option("--db", default=None, metavar="URL-OR-PATH", help=DB_HELP)(f)
    f = click.option("--min-seeds", type=click.IntRange(1), default=1, show_default=True,
                     help="Only (model, method) pairs with at least this many seeds.")(f)
    f = click.option("--where", "where", multiple=True, metavar="KEY=VALUE",
                     help="Filter on a method/model/run field (unmasking, top_p, strategy, "
                          "eta, t_switch, temperature, version, noise_schedule, num_samples,"
                          " ...); VALUE may be a comma list. Repeatable.")(f)
    f = click.option("--model", "models", multiple=True, metavar="MODEL_ID",
                     help="Only these models (repeatable).")(f)
    return f


def _color() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ


def load_results(db: str | None, models: Sequence[str] = (), where: Sequence[str] = (),
                 min_seeds: int = 1, metrics: Sequence[str] | None = None, profile=None,
                 per_seed: bool = True):
    """Store query + the report layer's filters.

    ``where`` keys the store can filter in SQL (method, model and run fields) are pushed
    down; other keys (e.g. fields only some models carry) are applied here. Unknown keys
    are an error listing the valid ones. ``metrics`` restricts the metrics loaded (composites
    are expanded into their components). A ``profile``'s ``field == value`` constraints are
    pushed down too (the ranking re-checks every constraint). ``per_seed=False`` reads the
    store's per-series summaries (same aggregates, no per-seed values: enough for ranking).
    """
    from bdgen.pipeline.store import open_store
    from bdgen.report.profiles import apply_where, check_where_keys, known_fields, split_where
    from bdgen.store.queries import WHERE_COLUMNS

    filters = split_where(where)
    sql_where = {k: v for k, v in filters.items() if k in WHERE_COLUMNS}
    rest = {k: v for k, v in filters.items() if k not in WHERE_COLUMNS}
    if len(models) > 1:
        sql_where["model"] = list(models)
    if profile is not None:
        for key, values in profile.field_equalities(WHERE_COLUMNS).items():
            sql_where.setdefault(key, values)
    store = open_store(db, readonly=True)
    try:
        query = store.method_results if per_seed else store.summary_results
        results = query(model=models[0] if len(models) == 1 else None, where=sql_where,
                        min_seeds=min_seeds, metrics=_expand(metrics))
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


def _expand(metrics: Sequence[str] | None) -> list[str] | None:
    """Stored metrics behind ``metrics`` (composites -> components); None = all."""
    if metrics is None:
        return None
    from bdgen.eval.registry import COMPOSITES
    from bdgen.report.metrics import metric_def

    out: list[str] = []
    for m in metrics:
        for name in COMPOSITES.get(m, (metric_def(m).name,)):
            if name not in out:
                out.append(name)
    return out


def _load_expectations(expect):
    if not expect:
        return None
    from bdgen.report.expectations import load_expectations

    return load_expectations(expect)


@click.command()
@click.option("--profile", default="preferred", show_default=True, metavar="NAME|PATH",
              help="Ranking profile: a shipped name (preferred, default) or a YAML file.")
@click.option("--metric", "metric_cols", multiple=True, metavar="NAME",
              help="Columns to show (default: the profile's). Repeatable.")
@click.option("--top", type=click.IntRange(1), default=None, help="Show the first N rows.")
@click.option("--format", "fmt", type=click.Choice(["table", "markdown", "csv", "json"]),
              default="table", show_default=True)
@click.option("--expect", default=None, metavar="FILE",
              help="Expectation file: adds a verdict column.")
@click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=None, help="Significance level of the tie test (default: profile's).")
@_common
def leaderboard(profile, metric_cols, top, fmt, expect, alpha, db, min_seeds, where, models):
    """Rank (model, method) pairs by a ranking profile, noise-aware.

    Hard constraints first, then the profile's priority metrics in order: results whose
    difference on a priority is within seed noise (Welch t-test on per-seed values at
    alpha, from their mean, std and n, which the store keeps per (model, method)) tie on it
    and are ordered by the next priority; the note column says so.
    """
    from bdgen.report.expectations import verdicts
    from bdgen.report.profiles import load_profile
    from bdgen.report.ranking import rank
    from bdgen.report.tables import leaderboard_table, render

    prof = load_profile(profile)
    ex = _load_expectations(expect)
    needed = prof.metrics + list(metric_cols) + ([e.metric for e in ex.items] if ex else [])
    results = load_results(db, models, where, min_seeds, metrics=needed, profile=prof,
                           per_seed=False)
    settle_results()
    vs = {r.label: verdicts(r, ex) for r in results} if ex else None
    table = leaderboard_table(rank(results, prof, alpha), list(metric_cols) or None, vs, top)
    click.echo(render(table, fmt, _color()), nl=False)


@click.command()
@click.argument("names", nargs=-1, required=True)
@click.option("--metric", "metric_rows", multiple=True, metavar="NAME",
              help="Only these metrics (default: every displayed metric). Repeatable.")
@click.option("--primary-only", is_flag=True, help="Hide diagnostic (KL) metrics.")
@click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=0.05, show_default=True, help="Level of the Welch significance mark.")
@click.option("--format", "fmt", type=click.Choice(["table", "markdown", "csv", "json"]),
              default="table", show_default=True)
@_common
def compare(names, metric_rows, primary_only, alpha, fmt, db, min_seeds, where, models):
    """Side by side: methods (or model/method labels), grouped metrics, deltas vs the first.

    A '*' marks a delta whose Welch t-test on the per-seed values has p < alpha.
    """
    from bdgen.diffusion.method import Method
    from bdgen.report.tables import compare_table, render, resolve_names

    if len(names) < 2:
        raise BdgenError("compare needs at least two methods (or model/method labels)")
    methods = [n.rsplit("/", 1)[-1] for n in names]
    try:
        for m in methods:
            Method.parse(m)
        narrowed = list(where) + ["method=" + ",".join(methods)]
        if all("/" in n for n in names) and not models:
            narrowed.append("model=" + ",".join(n.rsplit("/", 1)[0] for n in names))
    except BdgenError:
        narrowed = list(where)  # a model id among the names: load everything
    try:
        chosen = resolve_names(names, load_results(db, models, narrowed, min_seeds))
    except BdgenError:
        # Unknown name: reload without narrowing so the error lists the closest known names.
        chosen = resolve_names(names, load_results(db, models, where, min_seeds))
    table = compare_table(chosen, alpha, primary_only, list(metric_rows) or None)
    click.echo(render(table, fmt, _color()), nl=False)


@click.command()
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Output directory (default: the workspace's reports/).")
@click.option("--legacy", is_flag=True,
              help="Exactly the legacy comparison.md (no leaderboard/verdict sections).")
@click.option("--profile", default="preferred", show_default=True, metavar="NAME|PATH",
              help="Ranking profile of the leaderboard section.")
@click.option("--expect", default=None, metavar="FILE", help="Adds a verdict section.")
@click.option("--primary-only", is_flag=True, help="Hide diagnostic (KL) metrics.")
@click.option("--no-html", is_flag=True, help="Write only comparison.md.")
@_common
def report(out_dir, legacy, profile, expect, primary_only, no_html, db, min_seeds, where,
           models):
    """Write comparison.md and comparison.html from the store (never edit them by hand)."""
    from bdgen.report.document import write_report
    from bdgen.report.expectations import load_expectations
    from bdgen.report.profiles import load_profile

    prof = None if legacy else load_profile(profile)
    ex = load_expectations(expect) if expect and not legacy else None
    results = load_results(db, models, where, min_seeds)
    if not results:
        raise BdgenError("no results in the store match (import or evaluate first)")
    if out_dir is None:
        from bdgen.pipeline.workspace import Workspace

        out_dir = Workspace.find().reports_dir
    paths = write_report(results, out_dir, legacy=legacy, profile=prof, expectations=ex,
                         primary_only=primary_only, html=not no_html)
    for p in paths:
        click.echo(str(p))


def _pick(names, results):
    """Results for method names, labels or evaluation run ids (a run = that seed alone)."""
    from bdgen.report.tables import resolve_names

    by_run = {rid: (r, seed) for r in results for seed, rid in r.run_ids.items()}
    by_run.update({rid: (r, seed) for r in results for seed, rid in r.mlflow_run_ids.items()})
    out = []
    for name in names:
        if name in by_run:
            r, seed = by_run[name]
            out.append(single_seed(r, seed, name))
        else:
            out.extend(resolve_names([name], results))
    return out


def single_seed(result, seed: int, run_id: str):
    """The result restricted to one seed's values (``Aggregate.values`` in seed order)."""
    from dataclasses import replace

    from bdgen.eval.aggregate import Aggregate

    seeds = list(result.seeds)
    i = seeds.index(seed)
    metrics = {k: Aggregate.of([a.values[i]]) for k, a in result.metrics.items()
               if len(a.values) == len(seeds)}
    return replace(result, method=f"{result.method}@run{run_id}", metrics=metrics,
                   seeds=(seed,), run_ids={seed: run_id})


@click.command()
@click.argument("targets", nargs=-1, required=True)
@click.option("--expect", required=True, metavar="FILE",
              help="Expectation file (YAML) or the name of a shipped one (v2_remasking).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@click.option("--no-mlflow", is_flag=True,
              help="Do not record the verdicts as tags on the evaluation runs' MLflow runs.")
@_common
def check(targets, expect, fmt, no_mlflow, db, min_seeds, where, models):
    """Judge METHOD|RUN... against an expectation file: pass / in-range / miss / fail.

    The verdicts are also recorded as tags (bdgen.verdict.<expectations>.<metric>) on the
    MLflow runs of the judged evaluations. Exits 1 when any metric fails (or is missing).
    """
    import json

    from bdgen.report.comparison_md import format_agg
    from bdgen.report.expectations import load_expectations, verdicts
    from bdgen.report.metrics import metric_def, plain_display

    ex = load_expectations(expect)
    results = load_results(db, models, where, min_seeds)
    chosen = _pick(targets, results)
    failed = False
    doc = []
    judged = []
    for r in chosen:
        vs = verdicts(r, ex)
        judged.append((r, vs))
        failed |= any(v.failing for v in vs.values())
        doc.append({"label": r.label, "verdicts": {
            k: {"verdict": v.verdict, "mean": v.mean, "std": v.std, "n": v.n, "rule": v.rule}
            for k, v in vs.items()}})
        if fmt == "table":
            click.echo(f"{r.label}  (expectations: {ex.name})")
            for k, v in vs.items():
                from bdgen.eval.aggregate import Aggregate

                shown = "--" if v.mean is None else format_agg(
                    Aggregate(v.mean, v.std or 0.0, v.n), metric_def(k).percent)
                click.echo(f"  {v.verdict:<9} {plain_display(k):<28} {shown:<22} {v.rule}")
    if fmt == "json":
        click.echo(json.dumps(doc, indent=2))
    from bdgen.pipeline.verdicts import record_verdicts

    tagged = record_verdicts(judged, ex.name, no_mlflow=no_mlflow)
    if tagged and fmt == "table":
        click.echo(f"verdicts recorded as tags on {tagged} MLflow run(s)")
    if failed:
        sys.exit(1)
