"""Lookups the pipeline and reports make by identity: runs, checkpoints, pending work."""

from __future__ import annotations

from sqlalchemy import Select, func, or_, select

from bdgen.diffusion.method import Method as MethodSpec
from bdgen.errors import BdgenError
from bdgen.store.base import StoreBase
from bdgen.store.models import (
    BDGEN_PROVENANCE,
    Dataset,
    DenoisingEvaluation,
    DenoisingValue,
    EvaluationRun,
    GenerationRun,
    MetricDefinition,
    MetricSummary,
    MetricValue,
    Model,
    Series,
)
from bdgen.store.models import Method as MethodRow
from bdgen.store.normalise import canonical_metric, method_spec
from bdgen.store.records import (
    CheckpointModel,
    EvaluationRunInfo,
    GenerationRunInfo,
    ImportedRun,
    ModelCheckpoint,
)


def _generation_runs() -> Select:
    """Generation runs joined to their identity, in :class:`GenerationRunInfo` order."""
    return (select(GenerationRun.id, GenerationRun.status, Model.model_id, MethodRow.name,
                   GenerationRun.seed, Series.num_samples, Series.steps,
                   GenerationRun.samples_path, GenerationRun.samples_sha256,
                   GenerationRun.mlflow_run_id, GenerationRun.provenance, Series.constraint_set)
            .join(Series, GenerationRun.series_pk == Series.id)
            .join(Model, Series.model_pk == Model.id)
            .join(MethodRow, Series.method_pk == MethodRow.id))


class Lookups(StoreBase):
    """Read-only questions answered with :mod:`bdgen.store.records` dataclasses."""

    def model_checkpoint(self, model_id: str) -> ModelCheckpoint | None:
        """The checkpoint recorded for ``model_id``; None if no such model."""
        with self.read_session() as s:
            row = s.execute(select(Model.checkpoint_path, Model.checkpoint_sha256)
                            .where(Model.model_id == model_id)).first()
        return None if row is None else ModelCheckpoint(model_id, row[0], row[1])

    def model_of_checkpoint(self, sha256: str) -> CheckpointModel | None:
        """The model recorded for the checkpoint file of this sha256; None when there is
        none (or several, which registering checkpoints never makes: the id is derived
        from the file). What a job needs of a checkpoint to find its runs in the store
        without loading it (no torch)."""
        with self.read_session() as s:
            rows = s.execute(select(Model.model_id, Model.version)
                             .where(Model.checkpoint_sha256 == sha256)).all()
        return CheckpointModel(*rows[0]) if len(rows) == 1 else None

    def model_ids(self) -> list[str]:
        """Every recorded model id, sorted."""
        with self.read_session() as s:
            return sorted(s.scalars(select(Model.model_id)))

    def model_needing_denoising(self, model_id: str) -> ModelCheckpoint | None:
        """The checkpoint of a bdgen model with no succeeded model-level denoising record
        yet; None when it has one, or when the model has no checkpoint (imported)."""
        with self.read_session() as s:
            model = s.execute(select(Model).where(Model.model_id == model_id)
                              ).scalar_one_or_none()
            if model is None or not model.checkpoint_path or not model.checkpoint_sha256:
                return None
            done = s.execute(select(DenoisingEvaluation.id).where(
                DenoisingEvaluation.model_pk == model.id, DenoisingEvaluation.scope == "",
                DenoisingEvaluation.status == "succeeded")).first()
            return None if done else ModelCheckpoint(model_id, model.checkpoint_path,
                                                     model.checkpoint_sha256)

    def generation_run(self, run_id: int) -> GenerationRunInfo:
        """A generation run with its model and method (BdgenError if unknown)."""
        with self.read_session() as s:
            row = s.execute(_generation_runs().where(GenerationRun.id == run_id)).one_or_none()
        if row is None:
            raise BdgenError(f"generation run {run_id} is not in the store")
        return GenerationRunInfo(*row)

    def find_generation_run(self, model_id: str, method: str, seed: int, num_samples: int,
                            steps: int, constraint_set: str | None = None
                            ) -> GenerationRunInfo | None:
        """The generation run of an identity (``constraint_set``: of its series), or None."""
        with self.read_session() as s:
            row = s.execute(_generation_runs().where(
                Model.model_id == model_id, MethodRow.name == method,
                GenerationRun.seed == seed, Series.num_samples == num_samples,
                Series.steps == steps, Series.constraint_set == (constraint_set or ""))
            ).one_or_none()
        return None if row is None else GenerationRunInfo(*row)

    def generation_runs_by_path(self, paths: list[str]) -> dict[str, int]:
        """Samples path (as recorded) -> generation run id, for the given paths."""
        with self.read_session() as s:
            rows = s.execute(select(GenerationRun.samples_path, GenerationRun.id)
                             .where(GenerationRun.samples_path.in_(paths))).all()
        return {str(path): int(run_id) for path, run_id in rows}

    def pending_generation_runs(self, reference: str, evaluator_version: str,
                                model_id: str | None = None) -> list[int]:
        """Succeeded bdgen generation runs without a succeeded evaluation (reference,
        evaluator version), oldest first."""
        with self.read_session() as s:
            done = select(EvaluationRun.generation_run_pk).where(
                EvaluationRun.reference == reference,
                EvaluationRun.evaluator_version == evaluator_version,
                EvaluationRun.status == "succeeded")
            q = (select(GenerationRun.id).join(Series, GenerationRun.series_pk == Series.id)
                 .join(Model, Series.model_pk == Model.id)
                 .where(GenerationRun.status == "succeeded",
                        GenerationRun.provenance == BDGEN_PROVENANCE,
                        GenerationRun.id.not_in(done),
                        # not the measurement rows of unguided runs against a set
                        or_(Series.constraint_set == "",
                            GenerationRun.constraint_set.is_not(None)))
                 .order_by(GenerationRun.id))
            if model_id is not None:
                q = q.where(Model.model_id == model_id)
            return list(s.scalars(q))

    def evaluation_of(self, generation_run_id: int, reference: str,
                      evaluator_version: str, constraint_set: str | None = None
                      ) -> EvaluationRunInfo | None:
        """The evaluation run of a generation run for (reference, evaluator), or None; with
        ``constraint_set``, the evaluation that measured it against that set."""
        with self.read_session() as s:
            if constraint_set:
                gen = s.get(GenerationRun, generation_run_id)
                if gen is None:
                    return None
                if gen.series.constraint_set != constraint_set:
                    twin = s.scalar(select(GenerationRun.id).join(
                        Series, Series.id == GenerationRun.series_pk).where(
                        Series.model_pk == gen.series.model_pk,
                        Series.method_pk == gen.series.method_pk,
                        Series.num_samples == gen.series.num_samples,
                        Series.steps == gen.series.steps,
                        Series.constraint_set == constraint_set,
                        GenerationRun.seed == gen.seed))
                    if twin is None:
                        return None
                    generation_run_id = twin
            row = s.execute(select(EvaluationRun.id, EvaluationRun.status,
                                   EvaluationRun.mlflow_run_id)
                            .where(EvaluationRun.generation_run_pk == generation_run_id,
                                   EvaluationRun.reference == reference,
                                   EvaluationRun.evaluator_version == evaluator_version)
                            ).one_or_none()
        return None if row is None else EvaluationRunInfo(*row)

    def evaluation_metrics(self, evaluation_run_id: int) -> dict[str, float]:
        """Canonical metric name -> value of one evaluation run."""
        with self.read_session() as s:
            rows = s.execute(select(MetricDefinition.name, MetricValue.value)
                             .join(MetricValue, MetricValue.metric_pk == MetricDefinition.id)
                             .where(MetricValue.evaluation_run_pk == evaluation_run_id)).all()
        return {str(name): float(value) for name, value in rows}

    def imported_runs(self, source_sha256: str) -> list[ImportedRun]:
        """The runs imported from the result file with this sha256, by seed."""
        with self.read_session() as s:
            rows = s.execute(
                select(Model.model_id, MethodRow.name, GenerationRun.seed, Series.num_samples,
                       Series.steps, GenerationRun.id, EvaluationRun.id,
                       EvaluationRun.mlflow_run_id, Series.constraint_set)
                .join(GenerationRun, EvaluationRun.generation_run_pk == GenerationRun.id)
                .join(Series, GenerationRun.series_pk == Series.id)
                .join(Model, Series.model_pk == Model.id)
                .join(MethodRow, Series.method_pk == MethodRow.id)
                .where(EvaluationRun.source_sha256 == source_sha256)
                .order_by(GenerationRun.seed)).all()
        return [ImportedRun(*r) for r in rows]

    def per_seed_values(self, model: str, method: MethodSpec | str,
                        metric: str) -> dict[int, float]:
        """``{seed: value}`` of one metric for (model, method) (all num_samples/steps)."""
        name = canonical_metric(metric)
        spec = method_spec(method)
        with self.read_session() as s:
            q = (select(GenerationRun.seed, MetricValue.value, EvaluationRun.id)
                 .join(EvaluationRun, EvaluationRun.generation_run_pk == GenerationRun.id)
                 .join(MetricValue, MetricValue.evaluation_run_pk == EvaluationRun.id)
                 .join(MetricDefinition, MetricDefinition.id == MetricValue.metric_pk)
                 .join(Series, Series.id == GenerationRun.series_pk)
                 .join(Model, Model.id == Series.model_pk)
                 .join(MethodRow, MethodRow.id == Series.method_pk)
                 .where(Model.model_id == model, MethodRow.name == spec.format(),
                        MetricDefinition.name == name, EvaluationRun.status == "succeeded")
                 .order_by(EvaluationRun.id))
            return {seed: value for seed, value, _ in s.execute(q)}

    def counts(self) -> dict[str, int]:
        """Row counts per table (diagnostics and tests)."""
        out = {}
        with self.read_session() as s:
            for cls in (Dataset, Model, MethodRow, Series, GenerationRun, EvaluationRun,
                        MetricValue, MetricDefinition, DenoisingEvaluation, DenoisingValue,
                        MetricSummary):
                out[cls.__tablename__] = s.scalar(select(func.count()).select_from(cls)) or 0
        return out
