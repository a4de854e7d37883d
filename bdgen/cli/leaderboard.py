"""``bdgen leaderboard``, ``bdgen compare``, ``bdgen report`` and ``bdgen check``.

Parsing and printing only: what is loaded and how it is ranked is :mod:`bdgen.pipeline.views`
(results come from the store: ``--db`` URL-or-path, else ``$BDGEN_DB_URL``, else the
workspace's ``bdgen.db``).
"""

from __future__ import annotations

import sys

import click

from bdgen.cli.options import db_option, emit_table, format_option, list_callback

PROFILE_HELP = ("Ranking profile: auto (preferred, or default when no result meets "
                "preferred's constraints), a shipped name (preferred, default) or a YAML file.")


def _common(f):
    f = db_option(f)
    f = click.option("--min-seeds", type=click.IntRange(1), default=1, show_default=True,
                     help="Only (model, method) pairs with at least this many seeds.")(f)
    f = click.option("--where", "where", multiple=True, metavar="KEY=VALUE",
                     help="Filter on a method/model/run field (unmasking, top_p, strategy, "
                          "eta, t_switch, temperature, version, noise_schedule, num_samples,"
                          " ...). Repeatable; a repeated key accepts any of its values "
                          "(VALUE may also be a comma list).")(f)
    f = click.option("--model", "models", multiple=True, metavar="MODEL_ID",
                     callback=list_callback, help="Only these models (repeatable).")(f)
    return f


_ALPHA = click.FloatRange(0, 1, min_open=True, max_open=True)


@click.command()
@click.option("--profile", default="auto", show_default=True, metavar="NAME|PATH",
              help=PROFILE_HELP)
@click.option("--metric", "metric_cols", multiple=True, metavar="NAME",
              callback=list_callback,
              help="Columns to show (default: the profile's). Repeatable.")
@click.option("--top", type=click.IntRange(1), default=None, help="Show the first N rows.")
@format_option()
@click.option("--expect", default=None, metavar="FILE",
              help="Expectation file: adds a verdict column.")
@click.option("--alpha", type=_ALPHA, default=None,
              help="Significance level of the tie test (default: profile's).")
@_common
def leaderboard(profile, metric_cols, top, fmt, expect, alpha, db, min_seeds, where, models):
    """Rank (model, method) pairs by a ranking profile, noise-aware.

    Hard constraints first, then the profile's priority metrics in order: results whose
    difference on a priority is within seed noise (Welch t-test on per-seed values at
    alpha, from their mean, std and n, which the store keeps per (model, method)) tie on it
    and are ordered by the next priority; the note column says so. When the constraints
    exclude every result, the results are still shown, ranked without them, each with the
    constraint it fails.
    """
    from bdgen.pipeline.views import leaderboard_view

    emit_table(leaderboard_view(db, profile, metric_cols, expect, alpha, top, min_seeds,
                                where, models), fmt)


@click.command()
@click.argument("names", nargs=-1, required=True)
@click.option("--metric", "metric_rows", multiple=True, metavar="NAME",
              callback=list_callback,
              help="Only these metrics (default: every displayed metric). Repeatable.")
@click.option("--primary-only", is_flag=True, help="Hide diagnostic (KL) metrics.")
@click.option("--alpha", type=_ALPHA, default=0.05, show_default=True,
              help="Level of the Welch significance mark.")
@format_option()
@_common
def compare(names, metric_rows, primary_only, alpha, fmt, db, min_seeds, where, models):
    """Side by side: methods (or model/method labels), grouped metrics, deltas vs the first.

    A '*' marks a delta whose Welch t-test on the per-seed values has p < alpha.
    """
    from bdgen.pipeline.views import compare_view

    emit_table(compare_view(db, names, alpha, primary_only, metric_rows, min_seeds, where,
                            models), fmt)


@click.command()
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Output directory (default: the workspace's reports/).")
@click.option("--legacy", is_flag=True,
              help="Exactly the legacy comparison.md (no leaderboard/verdict sections).")
@click.option("--profile", default="auto", show_default=True, metavar="NAME|PATH",
              help=PROFILE_HELP)
@click.option("--expect", default=None, metavar="FILE", help="Adds a verdict section.")
@click.option("--primary-only", is_flag=True, help="Hide diagnostic (KL) metrics.")
@click.option("--no-html", is_flag=True, help="Write only comparison.md.")
@_common
def report(out_dir, legacy, profile, expect, primary_only, no_html, db, min_seeds, where,
           models):
    """Write comparison.md and comparison.html from the store (never edit them by hand)."""
    from bdgen.pipeline.views import report_view

    for p in report_view(db, out_dir, legacy, profile, expect, primary_only, not no_html,
                         min_seeds, where, models):
        click.echo(str(p))


@click.command()
@click.argument("targets", nargs=-1, required=True)
@click.option("--expect", required=True, metavar="FILE",
              help="Expectation file (YAML) or the name of a shipped one (v2_remasking).")
@format_option()
@click.option("--no-mlflow", is_flag=True,
              help="Do not record the verdicts as tags on the evaluation runs' MLflow runs.")
@_common
def check(targets, expect, fmt, no_mlflow, db, min_seeds, where, models):
    """Judge METHOD|RUN... against an expectation file: pass / in-range / miss / fail.

    The verdicts are also recorded as tags (bdgen.verdict.<expectations>.<metric>) on the
    MLflow runs of the judged evaluations. Exits 1 when any metric fails (or is missing).
    """
    from bdgen.pipeline.verdicts import record_verdicts
    from bdgen.pipeline.views import check_view
    from bdgen.report.tables import verdict_table

    ex, judged = check_view(db, targets, expect, min_seeds, where, models)
    emit_table(verdict_table(ex, judged), fmt)
    tagged = record_verdicts(judged, ex.name, no_mlflow=no_mlflow)
    if tagged and fmt == "table":
        click.echo(f"verdicts recorded as tags on {tagged} MLflow run(s)")
    if any(v.failing for _, vs in judged for v in vs.values()):
        sys.exit(1)
