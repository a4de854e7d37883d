"""``bdgen db upgrade|current|downgrade`` and ``bdgen import-legacy PATH...``."""

from __future__ import annotations

import sys

import click

DB_HELP = ("Store: a SQLAlchemy URL or a SQLite file path "
           "(default: $BDGEN_DB_URL, else the workspace's bdgen.db).")


def db_option(f):
    return click.option("--db", "db", default=None, metavar="URL-OR-PATH", help=DB_HELP)(f)


def _engine(db: str | None, readonly: bool = False):
    from bdgen.pipeline.store import store_url
    from bdgen.store.engine import make_engine

    url = store_url(db)
    return url, make_engine(url, readonly=readonly)


def _connect_error(url: str, exc: Exception):
    from bdgen.errors import BdgenError
    from bdgen.store.engine import redact

    msg = str(getattr(exc, "orig", exc)).strip().splitlines()
    return BdgenError(f"cannot open store {redact(url)}: {msg[0] if msg else exc}")


@click.group()
def db() -> None:
    """Manage the results store's schema (Alembic revisions in migrations/)."""


def _migrate(db: str | None, step, revision: str) -> tuple[str, str | None]:
    """Run one Alembic step on the store; returns (redacted URL, revision reached)."""
    from sqlalchemy.exc import DBAPIError

    from bdgen.store.engine import redact

    url, engine = _engine(db)
    try:
        return redact(url), step(engine, revision)
    except DBAPIError as exc:
        raise _connect_error(url, exc) from None
    finally:
        engine.dispose()


@db.command()
@click.argument("revision", default="head")
@db_option
def upgrade(revision: str, db: str | None) -> None:
    """Upgrade the store to REVISION (default: head)."""
    from bdgen.store import migrate

    where, rev = _migrate(db, migrate.upgrade, revision)
    click.echo(f"{where}: at revision {rev}")


@db.command()
@click.argument("revision", default="-1")
@db_option
def downgrade(revision: str, db: str | None) -> None:
    """Downgrade the store to REVISION (default: one step back; 'base' empties it)."""
    from bdgen.store import migrate

    where, rev = _migrate(db, migrate.downgrade, revision)
    click.echo(f"{where}: at revision {rev or 'base (empty)'}")


@db.command()
@db_option
def current(db: str | None) -> None:
    """Show the store's schema revision and the code's head revision (writes nothing)."""
    from sqlalchemy.exc import DBAPIError

    from bdgen.store import migrate
    from bdgen.store.engine import redact

    url, engine = _engine(db, readonly=True)  # a missing SQLite file: error, not created
    try:
        rev = migrate.current_revision(engine)
    except DBAPIError as exc:
        raise _connect_error(url, exc) from None
    finally:
        engine.dispose()
    head = migrate.head_revision()
    if rev is None:
        state = "empty (created on first use)"
    elif rev == head:
        state = "up to date"
    elif rev in migrate.known_revisions():
        state = "older than the code (upgraded on first use)"
    else:
        state = "UNKNOWN revision, newer than this bdgen: refused"
    click.echo(f"{redact(url)}: revision {rev or 'none'} (head {head}): {state}")


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
