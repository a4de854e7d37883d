"""``bdgen db upgrade|current|downgrade`` and ``bdgen import-legacy PATH...``."""

from __future__ import annotations

import sys

import click

from bdgen.cli.options import db_option


@click.group()
def db() -> None:
    """Manage the results store's schema (Alembic revisions in bdgen/store/migrations/)."""


@db.command()
@click.argument("revision", default="head")
@db_option
def upgrade(revision: str, db: str | None) -> None:
    """Upgrade the store to REVISION (default: head)."""
    from bdgen.pipeline.store import migrate_store

    where, rev = migrate_store(db, "upgrade", revision)
    click.echo(f"{where}: at revision {rev}")


@db.command()
@click.argument("revision", default="-1")
@db_option
def downgrade(revision: str, db: str | None) -> None:
    """Downgrade the store to REVISION (default: one step back; 'base' empties it)."""
    from bdgen.pipeline.store import migrate_store

    where, rev = migrate_store(db, "downgrade", revision)
    click.echo(f"{where}: at revision {rev or 'base (empty)'}")


@db.command()
@db_option
def current(db: str | None) -> None:
    """Show the store's schema revision and the code's head revision (writes nothing)."""
    from bdgen.pipeline.store import revision_state

    click.echo(revision_state(db))


@click.command("import-legacy")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--schedule", default=None,
              help="Noise schedule of the files' model (linear, loglinear, cosine, learned) "
                   "when no schedule folder (e.g. loglinear_noise_sc) is above them.")
@db_option
@click.option("--no-mlflow", is_flag=True,
              help="Do not log the imported runs to MLflow (default: one MLflow run per "
                   "method and seed, tagged legacy-import; needs a workspace or "
                   "$MLFLOW_TRACKING_URI).")
def import_legacy(paths: tuple[str, ...], schedule: str | None, db: str | None,
                  no_mlflow: bool) -> None:
    """Import legacy result JSON files (files or directory trees): format_version 2, and
    single-seed format v1 files upgraded on load (spec §7.3).

    Idempotent: files already imported are reported as skipped. A malformed file is
    reported with its reason and the others are still imported; the exit status is
    non-zero if any file failed.
    """
    from bdgen.pipeline.results_import import import_results

    done = import_results(paths, schedule, db, no_mlflow)
    if done.tracking_uri:
        click.echo(f"MLflow: {done.mlflow_runs_created} legacy-import run(s) created "
                   f"({done.tracking_uri})")
    for r in done.reports:
        click.echo(r.line(), err=r.status == "failed")
    n = {k: done.count(k) for k in ("added", "skipped", "failed")}
    click.echo(f"{n['added']} file(s) added, {n['skipped']} skipped, {n['failed']} failed")
    if n["failed"]:
        sys.exit(1)
