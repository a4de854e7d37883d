"""metric summaries: per-series n / mean / population std of every metric over the counted
seeds (derived from metric_values, kept current by the store), backfilled from existing data.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 03:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_CHUNK = 500  # series per backfill statement

# The tables as of this revision (the backfill must not depend on later model changes).
_meta = sa.MetaData()
_series = sa.Table("series", _meta, sa.Column("id", sa.Integer))
_gen = sa.Table("generation_runs", _meta, sa.Column("id", sa.Integer),
                sa.Column("series_pk", sa.Integer), sa.Column("seed", sa.Integer),
                sa.Column("status", sa.String))
_ev = sa.Table("evaluation_runs", _meta, sa.Column("id", sa.Integer),
               sa.Column("generation_run_pk", sa.Integer), sa.Column("status", sa.String))
_mv = sa.Table("metric_values", _meta, sa.Column("evaluation_run_pk", sa.Integer),
               sa.Column("metric_pk", sa.Integer), sa.Column("value", sa.Float))
_md = sa.Table("metric_definitions", _meta, sa.Column("id", sa.Integer),
               sa.Column("name", sa.String))


def upgrade() -> None:
    op.create_table(
        "metric_summaries",
        sa.Column("metric", sa.String(length=255), nullable=False),
        sa.Column("series_pk", sa.Integer(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("mean", sa.Float(), nullable=False),
        sa.Column("std", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["series_pk"], ["series.id"], name=op.f("fk_metric_summaries_series_pk_series"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("metric", "series_pk", name=op.f("pk_metric_summaries")),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_metric_summaries_series_pk", "metric_summaries", ["series_pk"],
                    unique=False)
    _backfill(op.get_bind())


def _backfill(conn: sa.Connection) -> None:
    """Summaries of every series from its counted evaluations (newest succeeded evaluation
    of each succeeded generation run), with the store's arithmetic."""
    from bdgen.store.engine import bulk_insert
    from bdgen.store.summaries import COLUMNS, summarise

    names = {pk: name for pk, name in conn.execute(sa.select(_md.c.id, _md.c.name))}  # noqa: C416 (a Result has keys())
    pks = list(conn.execute(sa.select(_series.c.id).order_by(_series.c.id)).scalars())
    for i in range(0, len(pks), _CHUNK):
        chunk = pks[i:i + _CHUNK]
        counted = (sa.select(_gen.c.series_pk, _gen.c.seed, sa.func.max(_ev.c.id).label("ev"))
                   .join_from(_gen, _ev, _ev.c.generation_run_pk == _gen.c.id)
                   .where(_gen.c.series_pk.in_(chunk), _gen.c.status == "succeeded",
                          _ev.c.status == "succeeded")
                   .group_by(_gen.c.id, _gen.c.series_pk, _gen.c.seed)
                   .subquery("counted"))
        rows = conn.execute(
            sa.select(counted.c.series_pk, counted.c.seed, _mv.c.metric_pk, _mv.c.value)
            .join_from(counted, _mv, _mv.c.evaluation_run_pk == counted.c.ev))
        bulk_insert(conn, "metric_summaries", COLUMNS,
                    summarise([tuple(r) for r in rows], names))


def downgrade() -> None:
    op.drop_index("ix_metric_summaries_series_pk", table_name="metric_summaries")
    op.drop_table("metric_summaries")
