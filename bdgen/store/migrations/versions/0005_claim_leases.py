"""job claims: leases (token, host, pid, heartbeat) on generation runs, evaluations, denoising
evaluations and training runs, so a claim of a dead process is taken over within a minute.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 06:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_claims",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("key", sa.String(length=512), nullable=False),
        sa.Column("token", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("claimed_at", sa.DateTime(), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("kind IN ('generation', 'evaluation', 'denoising', 'training')",
                           name=op.f("ck_job_claims_kind")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_claims")),
        sa.UniqueConstraint("kind", "key", name=op.f("uq_job_claims_kind_key")),
    )


def downgrade() -> None:
    op.drop_table("job_claims")
