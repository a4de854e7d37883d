"""initial schema: datasets, models, methods, series, generation/evaluation runs, metric
definitions and values, per-model denoising, store metadata.

Revision ID: 0001
Revises:
Create Date: 2026-11-26 00:16:25.697707
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dataset_id", sa.String(length=128), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("split_seed", sa.Integer(), nullable=True),
        sa.Column("split_fractions", sa.JSON(), nullable=True),
        sa.Column("params", sa.JSON(), nullable=True),
        sa.Column("stats", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_datasets")),
        sa.UniqueConstraint("content_hash", name=op.f("uq_datasets_content_hash")),
        sa.UniqueConstraint("dataset_id", name=op.f("uq_datasets_dataset_id")),
    )
    op.create_table(
        "methods",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("unmasking", sa.String(length=16), nullable=False),
        sa.Column("top_p", sa.Float(), nullable=True),
        sa.Column("temperature", sa.Float(), nullable=False),
        sa.Column("strategy", sa.String(length=16), nullable=True),
        sa.Column("eta", sa.Float(), nullable=True),
        sa.Column("t_switch", sa.Float(), nullable=True),
        sa.Column("v2", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_methods")),
        sa.UniqueConstraint("name", name=op.f("uq_methods_name")),
    )
    op.create_table(
        "metric_definitions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("legacy_key", sa.String(length=255), nullable=True),
        sa.Column("metric_group", sa.String(length=32), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("is_primary", sa.Boolean(), nullable=False),
        sa.Column("displayed", sa.Boolean(), nullable=False),
        sa.Column("display", sa.String(length=255), nullable=False),
        sa.Column("percent", sa.Boolean(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_metric_definitions")),
        sa.UniqueConstraint("name", name=op.f("uq_metric_definitions_name")),
    )
    op.create_table(
        "store_meta",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_store_meta")),
    )
    op.create_table(
        "models",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.String(length=128), nullable=False),
        sa.Column("version", sa.String(length=4), nullable=False),
        sa.Column("noise_schedule", sa.String(length=32), nullable=False),
        sa.Column("model_config", sa.JSON(), nullable=True),
        sa.Column("train_config", sa.JSON(), nullable=True),
        sa.Column("dataset_pk", sa.Integer(), nullable=True),
        sa.Column("checkpoint_path", sa.Text(), nullable=True),
        sa.Column("checkpoint_sha256", sa.String(length=64), nullable=True),
        sa.Column("legacy_label", sa.String(length=128), nullable=True),
        sa.Column("mlflow_run_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint("version IN ('v1', 'v2')", name=op.f("ck_models_version")),
        sa.ForeignKeyConstraint(
            ["dataset_pk"], ["datasets.id"], name=op.f("fk_models_dataset_pk_datasets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_models")),
        sa.UniqueConstraint("model_id", name=op.f("uq_models_model_id")),
    )
    op.create_table(
        "denoising_evaluations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_pk", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(length=255), nullable=False),
        sa.Column("method_pk", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("code_version", sa.String(length=64), nullable=True),
        sa.Column("host", sa.String(length=255), nullable=True),
        sa.Column("mlflow_run_id", sa.String(length=64), nullable=True),
        sa.Column("no_mlflow", sa.Boolean(), nullable=False),
        sa.Column("provenance", sa.String(length=32), nullable=False),
        sa.Column("source_path", sa.Text(), nullable=True),
        sa.Column("source_sha256", sa.String(length=64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "provenance IN ('bdgen', 'legacy import')",
            name=op.f("ck_denoising_evaluations_provenance"),
        ),
        sa.CheckConstraint(
            "status IN ('running', 'succeeded', 'failed')",
            name=op.f("ck_denoising_evaluations_status"),
        ),
        sa.ForeignKeyConstraint(
            ["method_pk"], ["methods.id"], name=op.f("fk_denoising_evaluations_method_pk_methods")
        ),
        sa.ForeignKeyConstraint(
            ["model_pk"], ["models.id"], name=op.f("fk_denoising_evaluations_model_pk_models")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_denoising_evaluations")),
        sa.UniqueConstraint(
            "model_pk", "scope", name=op.f("uq_denoising_evaluations_model_pk_scope")
        ),
    )
    op.create_table(
        "series",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_pk", sa.Integer(), nullable=False),
        sa.Column("method_pk", sa.Integer(), nullable=False),
        sa.Column("num_samples", sa.Integer(), nullable=False),
        sa.Column("steps", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["method_pk"], ["methods.id"], name=op.f("fk_series_method_pk_methods")
        ),
        sa.ForeignKeyConstraint(
            ["model_pk"], ["models.id"], name=op.f("fk_series_model_pk_models")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_series")),
        sa.UniqueConstraint(
            "model_pk",
            "method_pk",
            "num_samples",
            "steps",
            name=op.f("uq_series_model_pk_method_pk_num_samples_steps"),
        ),
    )
    with op.batch_alter_table("series", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_series_method_pk"), ["method_pk"], unique=False)

    op.create_table(
        "denoising_values",
        sa.Column("denoising_evaluation_pk", sa.Integer(), nullable=False),
        sa.Column("metric_pk", sa.Integer(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["denoising_evaluation_pk"],
            ["denoising_evaluations.id"],
            name=op.f("fk_denoising_values_denoising_evaluation_pk_denoising_evaluations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["metric_pk"],
            ["metric_definitions.id"],
            name=op.f("fk_denoising_values_metric_pk_metric_definitions"),
        ),
        sa.PrimaryKeyConstraint(
            "denoising_evaluation_pk", "metric_pk", name=op.f("pk_denoising_values")
        ),
    )
    op.create_table(
        "generation_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("series_pk", sa.Integer(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("samples_path", sa.Text(), nullable=True),
        sa.Column("samples_sha256", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("code_version", sa.String(length=64), nullable=True),
        sa.Column("host", sa.String(length=255), nullable=True),
        sa.Column("mlflow_run_id", sa.String(length=64), nullable=True),
        sa.Column("no_mlflow", sa.Boolean(), nullable=False),
        sa.Column("provenance", sa.String(length=32), nullable=False),
        sa.Column("source_path", sa.Text(), nullable=True),
        sa.Column("source_sha256", sa.String(length=64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "provenance IN ('bdgen', 'legacy import')", name=op.f("ck_generation_runs_provenance")
        ),
        sa.CheckConstraint(
            "status IN ('running', 'succeeded', 'failed')", name=op.f("ck_generation_runs_status")
        ),
        sa.ForeignKeyConstraint(
            ["series_pk"], ["series.id"], name=op.f("fk_generation_runs_series_pk_series")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_generation_runs")),
        sa.UniqueConstraint("id", "series_pk", name=op.f("uq_generation_runs_id_series_pk")),
        sa.UniqueConstraint("series_pk", "seed", name=op.f("uq_generation_runs_series_pk_seed")),
    )
    op.create_table(
        "evaluation_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("generation_run_pk", sa.Integer(), nullable=False),
        sa.Column("series_pk", sa.Integer(), nullable=False),
        sa.Column("reference", sa.String(length=255), nullable=False),
        sa.Column("evaluator_version", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("code_version", sa.String(length=64), nullable=True),
        sa.Column("host", sa.String(length=255), nullable=True),
        sa.Column("mlflow_run_id", sa.String(length=64), nullable=True),
        sa.Column("no_mlflow", sa.Boolean(), nullable=False),
        sa.Column("provenance", sa.String(length=32), nullable=False),
        sa.Column("source_path", sa.Text(), nullable=True),
        sa.Column("source_sha256", sa.String(length=64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "provenance IN ('bdgen', 'legacy import')", name=op.f("ck_evaluation_runs_provenance")
        ),
        sa.CheckConstraint(
            "status IN ('running', 'succeeded', 'failed')", name=op.f("ck_evaluation_runs_status")
        ),
        sa.ForeignKeyConstraint(
            ["generation_run_pk", "series_pk"],
            ["generation_runs.id", "generation_runs.series_pk"],
            name=op.f("fk_evaluation_runs_generation_run_pk_generation_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_evaluation_runs")),
        sa.UniqueConstraint(
            "generation_run_pk",
            "reference",
            "evaluator_version",
            name=op.f("uq_evaluation_runs_generation_run_pk_reference_evaluator_version"),
        ),
        sa.UniqueConstraint("id", "series_pk", name=op.f("uq_evaluation_runs_id_series_pk")),
    )
    op.create_table(
        "metric_values",
        sa.Column("evaluation_run_pk", sa.Integer(), nullable=False),
        sa.Column("metric_pk", sa.Integer(), nullable=False),
        sa.Column("series_pk", sa.Integer(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["evaluation_run_pk", "series_pk"],
            ["evaluation_runs.id", "evaluation_runs.series_pk"],
            name=op.f("fk_metric_values_evaluation_run_pk_evaluation_runs"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["metric_pk"],
            ["metric_definitions.id"],
            name=op.f("fk_metric_values_metric_pk_metric_definitions"),
        ),
        sa.PrimaryKeyConstraint("evaluation_run_pk", "metric_pk", name=op.f("pk_metric_values")),
        sqlite_with_rowid=False,
    )
    with op.batch_alter_table("metric_values", schema=None) as batch_op:
        batch_op.create_index(
            "ix_metric_values_metric_series", ["metric_pk", "series_pk", "value"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("metric_values", schema=None) as batch_op:
        batch_op.drop_index("ix_metric_values_metric_series")

    op.drop_table("metric_values")
    op.drop_table("evaluation_runs")
    op.drop_table("generation_runs")
    op.drop_table("denoising_values")
    with op.batch_alter_table("series", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_series_method_pk"))

    op.drop_table("series")
    op.drop_table("denoising_evaluations")
    op.drop_table("models")
    op.drop_table("store_meta")
    op.drop_table("metric_definitions")
    op.drop_table("methods")
    op.drop_table("datasets")
