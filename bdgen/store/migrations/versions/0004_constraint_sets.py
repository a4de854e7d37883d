"""constraint sets: the identity of the constraint set a result was measured against (and a
guided run sampled with) on series (part of its unique key, "" for none), generation runs
and evaluation runs (NULL for none), so results with different sets are never pooled.

Revision ID: 0004
Revises: 0002
Create Date: 2026-12-02 07:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0002"
branch_labels = None
depends_on = None

_LEN = 80
_OLD_UQ = "uq_series_model_pk_method_pk_num_samples_steps"
_NEW_UQ = "uq_series_model_pk_method_pk_num_samples_steps_constraint_set"


def upgrade() -> None:
    with op.batch_alter_table("series", schema=None) as batch_op:
        batch_op.add_column(sa.Column("constraint_set", sa.String(length=_LEN),
                                      server_default="", nullable=False))
        batch_op.drop_constraint(_OLD_UQ, type_="unique")
        batch_op.create_unique_constraint(
            _NEW_UQ, ["model_pk", "method_pk", "num_samples", "steps", "constraint_set"])
    for name in ("generation_runs", "evaluation_runs"):
        with op.batch_alter_table(name, schema=None) as batch_op:
            batch_op.add_column(sa.Column("constraint_set", sa.String(length=_LEN),
                                          nullable=True))


def downgrade() -> None:
    for name in ("evaluation_runs", "generation_runs"):
        with op.batch_alter_table(name, schema=None) as batch_op:
            batch_op.drop_column("constraint_set")
    # results measured against a constraint set have no place in the old schema
    measured = "(SELECT id FROM series WHERE constraint_set != '')"
    for name in ("metric_values", "metric_summaries", "evaluation_runs", "generation_runs"):
        op.execute(f"DELETE FROM {name} WHERE series_pk IN {measured}")
    op.execute("DELETE FROM series WHERE constraint_set != ''")
    with op.batch_alter_table("series", schema=None) as batch_op:
        batch_op.drop_constraint(_NEW_UQ, type_="unique")
        batch_op.create_unique_constraint(_OLD_UQ, ["model_pk", "method_pk", "num_samples",
                                                    "steps"])
        batch_op.drop_column("constraint_set")
