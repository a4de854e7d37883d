"""The results store schema (SQLAlchemy 2.x typed ORM).

Identities (docs/PLATFORM.md, "Identities"): dataset -> model -> (method) -> generation
run -> evaluation run -> metric values. Constraints keep the store honest:

* a method is unique on its canonical name, which :class:`bdgen.diffusion.method.Method`
  derives injectively from the (normalised) sampling parameters, so "unique name" *is*
  "unique parameters" without NULL-in-unique-constraint pitfalls;
* a generation run is unique on (model, method, seed, num_samples, steps), stored as
  (series, seed) where a series is (model, method, num_samples, steps) unique;
* an evaluation run references exactly one generation run and is unique on
  (generation run, reference split, evaluator version);
* a metric value is unique on (evaluation run, metric) (its primary key).

Denoising metrics are model quality, not per seed: they live in ``denoising_evaluations``
(one per model, ``scope = ""``) with their values in ``denoising_values``. Legacy files carry
one denoising block per *method file*, and those blocks differ, so a legacy import records
one denoising evaluation per (model, method) with ``scope = <method name>``; queries prefer
the method-scoped block and fall back to the model-level one.

Per-seed values are the source of truth. ``metric_summaries`` holds their aggregates over
seeds (n, mean, population std per series and metric) so that leaderboards need not read
every value; it is derived data, rewritten from the per-seed values by the store in the
same transaction as any change to which evaluations of a series count
(:mod:`bdgen.store.summaries`).
Schema changes only through Alembic revisions in ``migrations/``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.sql.schema import Table

RUN_STATUSES = ("running", "succeeded", "failed")
#: Where a row came from: made by bdgen, or imported from a result file.
BDGEN_PROVENANCE = "bdgen"
IMPORT_PROVENANCE = "legacy import"
PROVENANCES = (BDGEN_PROVENANCE, IMPORT_PROVENANCE)

# Deterministic constraint names, so Alembic batch migrations can address them on SQLite.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class RunBookkeeping:
    """Columns every run row carries (status, timing, code version, host, tracking, origin)."""

    status: Mapped[str] = mapped_column(String(16), default="running")
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    duration_s: Mapped[float | None] = mapped_column(Float)
    code_version: Mapped[str | None] = mapped_column(String(64))
    host: Mapped[str | None] = mapped_column(String(255))
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))
    no_mlflow: Mapped[bool] = mapped_column(Boolean, default=False)
    provenance: Mapped[str] = mapped_column(String(32), default=BDGEN_PROVENANCE)
    source_path: Mapped[str | None] = mapped_column(Text)
    source_sha256: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)


def _sql_list(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


def _run_checks() -> tuple[CheckConstraint, CheckConstraint]:
    return (
        CheckConstraint(f"status IN ({_sql_list(RUN_STATUSES)})", name="status"),
        CheckConstraint(f"provenance IN ({_sql_list(PROVENANCES)})", name="provenance"),
    )


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[str] = mapped_column(String(128), unique=True)
    source: Mapped[str] = mapped_column(String(32))
    content_hash: Mapped[str] = mapped_column(String(64), unique=True)
    split_seed: Mapped[int | None] = mapped_column(Integer)
    split_fractions: Mapped[list | None] = mapped_column(JSON)
    params: Mapped[dict | None] = mapped_column(JSON)
    stats: Mapped[dict | None] = mapped_column(JSON)
    created_at: Mapped[datetime | None] = mapped_column(DateTime)


class Model(Base):
    __tablename__ = "models"
    __table_args__ = (CheckConstraint("version IN ('v1', 'v2')", name="version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[str] = mapped_column(String(128), unique=True)
    version: Mapped[str] = mapped_column(String(4))
    noise_schedule: Mapped[str] = mapped_column(String(32))
    model_config: Mapped[dict | None] = mapped_column(JSON)
    train_config: Mapped[dict | None] = mapped_column(JSON)
    dataset_pk: Mapped[int | None] = mapped_column(ForeignKey("datasets.id"))
    checkpoint_path: Mapped[str | None] = mapped_column(Text)
    checkpoint_sha256: Mapped[str | None] = mapped_column(String(64))
    legacy_label: Mapped[str | None] = mapped_column(String(128))
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime | None] = mapped_column(DateTime)

    dataset: Mapped[Dataset | None] = relationship()


class Method(Base):
    __tablename__ = "methods"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    unmasking: Mapped[str] = mapped_column(String(16))
    top_p: Mapped[float | None] = mapped_column(Float)
    temperature: Mapped[float] = mapped_column(Float)
    strategy: Mapped[str | None] = mapped_column(String(16))
    eta: Mapped[float | None] = mapped_column(Float)
    t_switch: Mapped[float | None] = mapped_column(Float)
    v2: Mapped[bool] = mapped_column(Boolean, default=False)


#: Length of a constraint-set identity column: a sha256 hex (ConstraintSet.identity) or a
#: legacy identity "legacy-<sha256 hex>" (bdgen.store.results_import.legacy_constraint_set).
CONSTRAINT_SET_LEN = 80


class Series(Base):
    """A model sampled with one method at one size, measured against one constraint set: a
    generation run minus its seed.

    The seeds of a series are what aggregates run over, so its id is the grouping key of
    every leaderboard query (see ``metric_values.series_pk``). ``constraint_set`` is the
    identity of the set its ``constraint/*`` metrics were measured against ("" for none):
    a guided run's own set, or the set an unguided baseline was measured against. It is part
    of the key, so results with different sets are never pooled, even under one method name
    (a legacy guided tag names no set).
    """

    __tablename__ = "series"
    __table_args__ = (UniqueConstraint("model_pk", "method_pk", "num_samples", "steps",
                                       "constraint_set"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_pk: Mapped[int] = mapped_column(ForeignKey("models.id"))
    method_pk: Mapped[int] = mapped_column(ForeignKey("methods.id"), index=True)
    num_samples: Mapped[int] = mapped_column(Integer)
    steps: Mapped[int] = mapped_column(Integer)
    constraint_set: Mapped[str] = mapped_column(String(CONSTRAINT_SET_LEN), default="",
                                                server_default="")

    model: Mapped[Model] = relationship()
    method: Mapped[Method] = relationship()


class GenerationRun(RunBookkeeping, Base):
    """Unique on (series, seed), i.e. on (model, method, seed, num_samples, steps, constraint
    set). ``constraint_set``: the set the samples were drawn with (guided runs), else NULL;
    an unguided run measured against a set appears in that set's series with NULL here and
    the samples file of the run it measures."""

    __tablename__ = "generation_runs"
    __table_args__ = (
        UniqueConstraint("series_pk", "seed"),
        UniqueConstraint("id", "series_pk"),  # target of the evaluation_runs composite FK
        *_run_checks(),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_pk: Mapped[int] = mapped_column(ForeignKey("series.id"))
    seed: Mapped[int] = mapped_column(Integer)
    samples_path: Mapped[str | None] = mapped_column(Text)
    samples_sha256: Mapped[str | None] = mapped_column(String(64))
    constraint_set: Mapped[str | None] = mapped_column(String(CONSTRAINT_SET_LEN))

    series: Mapped[Series] = relationship()


class EvaluationRun(RunBookkeeping, Base):
    """One evaluation of exactly one generation run. ``series_pk`` repeats the generation
    run's series (a composite foreign key keeps the copy exact) so that metric values can
    carry it too."""

    __tablename__ = "evaluation_runs"
    __table_args__ = (
        UniqueConstraint("generation_run_pk", "reference", "evaluator_version"),
        UniqueConstraint("id", "series_pk"),  # target of the metric_values composite FK
        ForeignKeyConstraint(["generation_run_pk", "series_pk"],
                             ["generation_runs.id", "generation_runs.series_pk"],
                             ondelete="CASCADE"),
        *_run_checks(),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    generation_run_pk: Mapped[int] = mapped_column(Integer)
    series_pk: Mapped[int] = mapped_column(Integer)
    reference: Mapped[str] = mapped_column(String(255))
    evaluator_version: Mapped[str] = mapped_column(String(64))
    #: the set its constraint/* metrics were measured against (NULL: none measured)
    constraint_set: Mapped[str | None] = mapped_column(String(CONSTRAINT_SET_LEN))


class MetricDefinition(Base):
    """Mirror of :mod:`bdgen.eval.registry` (synced at upgrade; stratified keys on demand)."""

    __tablename__ = "metric_definitions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    legacy_key: Mapped[str | None] = mapped_column(String(255))
    group: Mapped[str] = mapped_column("metric_group", String(32))
    direction: Mapped[str] = mapped_column(String(8))
    primary: Mapped[bool] = mapped_column("is_primary", Boolean)
    displayed: Mapped[bool] = mapped_column(Boolean)
    display: Mapped[str] = mapped_column(String(255))
    percent: Mapped[bool] = mapped_column(Boolean)
    description: Mapped[str] = mapped_column(Text, default="")


class MetricValue(Base):
    """One per-seed metric value. ``series_pk`` (kept equal to its run's series by a
    composite foreign key) lets the leaderboard aggregate read one covering index in group
    order, (metric, series, value), without joins or sorting."""

    __tablename__ = "metric_values"
    __table_args__ = (
        ForeignKeyConstraint(["evaluation_run_pk", "series_pk"],
                             ["evaluation_runs.id", "evaluation_runs.series_pk"],
                             ondelete="CASCADE"),
        Index("ix_metric_values_metric_series", "metric_pk", "series_pk", "value"),
        {"sqlite_with_rowid": False},  # clustered on the primary key: one b-tree less
    )

    evaluation_run_pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    metric_pk: Mapped[int] = mapped_column(ForeignKey("metric_definitions.id"),
                                           primary_key=True)
    series_pk: Mapped[int] = mapped_column(Integer)
    value: Mapped[float] = mapped_column(Float)


class MetricSummary(Base):
    """Derived: one metric of a series aggregated over its counted seeds (the newest
    succeeded evaluation of each succeeded generation run), exactly as
    :meth:`bdgen.eval.aggregate.Aggregate.of` computes it from the per-seed values.

    ``metric`` is a canonical metric name, or a registry composite (``COMPOSITES``) whose
    row summarises the per-seed products of its parts. Written only by
    :func:`bdgen.store.summaries.refresh`; keyed metric-first so a leaderboard reads a few
    contiguous ranges.
    """

    __tablename__ = "metric_summaries"
    __table_args__ = (
        Index("ix_metric_summaries_series_pk", "series_pk"),
        {"sqlite_with_rowid": False},
    )

    metric: Mapped[str] = mapped_column(String(255), primary_key=True)
    series_pk: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"),
                                           primary_key=True)
    n: Mapped[int] = mapped_column(Integer)
    mean: Mapped[float] = mapped_column(Float)
    std: Mapped[float] = mapped_column(Float)


class DenoisingEvaluation(RunBookkeeping, Base):
    __tablename__ = "denoising_evaluations"
    __table_args__ = (UniqueConstraint("model_pk", "scope"), *_run_checks())

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_pk: Mapped[int] = mapped_column(ForeignKey("models.id"))
    scope: Mapped[str] = mapped_column(String(255), default="")  # "" or a method name
    method_pk: Mapped[int | None] = mapped_column(ForeignKey("methods.id"))


class DenoisingValue(Base):
    __tablename__ = "denoising_values"

    denoising_evaluation_pk: Mapped[int] = mapped_column(
        ForeignKey("denoising_evaluations.id", ondelete="CASCADE"), primary_key=True)
    metric_pk: Mapped[int] = mapped_column(ForeignKey("metric_definitions.id"),
                                           primary_key=True)
    value: Mapped[float] = mapped_column(Float)


class StoreMeta(Base):
    """Small key/value facts about the store (e.g. the synced registry fingerprint)."""

    __tablename__ = "store_meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


def table(cls: type[Base]) -> Table:
    """The Core table of a mapped class, typed as one (``cls.__table__`` is typed as any
    FromClause), for Core statements and bulk writes."""
    t = cls.__table__
    assert isinstance(t, Table)
    return t
