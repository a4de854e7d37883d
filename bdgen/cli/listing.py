"""``bdgen runs`` and ``bdgen models``: what the store holds, with ids to copy."""

from __future__ import annotations

import click

from bdgen.cli.options import db_option, emit_table, format_option

_WHERE = click.option("--where", "where", multiple=True, metavar="KEY=VALUE",
                      help="Filter on a field (model, method, seed, status, unmasking, ...). "
                           "Repeatable; a repeated key accepts any of its values.")


@click.command()
@_WHERE
@click.option("--limit", type=click.IntRange(1), default=None, help="At most N runs.")
@format_option()
@db_option
def runs(where, limit, fmt, db):
    """List the generation runs of the store (newest first) with their evaluation status.

    The id is what `bdgen evaluate --run ID` takes; JSON and CSV carry every field (MLflow
    run id, provenance).
    """
    from bdgen.pipeline.views import runs_view

    emit_table(runs_view(db, where, limit), fmt)


@click.command()
@_WHERE
@format_option()
@db_option
def models(where, fmt, db):
    """List the models of the store (ids for --model) with their generation-run counts."""
    from bdgen.pipeline.views import models_view

    emit_table(models_view(db, where), fmt)
