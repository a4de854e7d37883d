"""Generation runs: started (or claimed by one of several racing processes, see
:mod:`bdgen.store.claims`), finished with their samples file, failed with a reason, linked
to their MLflow runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import cast

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from bdgen.diffusion.method import Method as MethodSpec
from bdgen.errors import BdgenError
from bdgen.store import summaries
from bdgen.store.claims import (
    Claim,
    Claims,
    Holder,
    claim_in,
    claim_ttl,
    evaluation_key,
    generation_key,
    release_claim_in,
    settle_in,
)
from bdgen.store.engine import redact
from bdgen.store.identities import Identities
from bdgen.store.models import (
    BDGEN_PROVENANCE,
    CONSTRAINT_SET_LEN,
    DenoisingEvaluation,
    EvaluationRun,
    GenerationRun,
    Model,
    Series,
)
from bdgen.store.normalise import method_spec
from bdgen.util.clock import utcnow
from bdgen.util.provenance import code_version, hostname


@dataclass(frozen=True)
class GenerationClaim:
    """The outcome of claiming a generation run: ``won`` (``run_id`` and ``claim`` set), or
    not, because it already succeeded (``done``) or a live process holds it (``holder``)."""

    run_id: int | None
    claim: Claim | None
    holder: Holder | None
    done: bool = False

    @property
    def won(self) -> bool:
        return self.claim is not None


def _claim_of(s: Session, row: GenerationRun | EvaluationRun | DenoisingEvaluation
              ) -> tuple[str, str]:
    """The (kind, key) of the claim guarding a run row."""
    if isinstance(row, GenerationRun):
        return "generation", generation_key(row.series_pk, row.seed)
    if isinstance(row, EvaluationRun):
        return "evaluation", _evaluation_claim_key(s, row)
    model = s.get(Model, row.model_pk)
    return "denoising", model.model_id if model is not None else ""


def _evaluation_claim_key(s: Session, row: EvaluationRun) -> str:
    """The claim key of an evaluation row, as its evaluator claimed it
    (:func:`~bdgen.store.claims.evaluation_key`): the generation run evaluated and the
    constraint set it was measured against. The measurement of an unguided run against a
    set hangs on that run's row in the set's series
    (:meth:`~bdgen.store.evaluations.Evaluations._measured_run`); its evaluator claimed it
    under the run itself, found here by (model, method, samples, steps, seed) in the
    unconstrained series."""
    gen = s.get(GenerationRun, row.generation_run_pk)
    series = gen.series if gen is not None else None
    if gen is None or series is None or not series.constraint_set:
        return evaluation_key(row.generation_run_pk, row.reference, row.evaluator_version,
                              row.constraint_set)
    evaluated = gen.id
    if not gen.constraint_set:  # a measured twin: the run it measures
        original = s.scalar(select(GenerationRun.id).join(
            Series, Series.id == GenerationRun.series_pk).where(
            Series.model_pk == series.model_pk, Series.method_pk == series.method_pk,
            Series.num_samples == series.num_samples, Series.steps == series.steps,
            Series.constraint_set == "", GenerationRun.seed == gen.seed))
        evaluated = original if original is not None else gen.id
    return evaluation_key(evaluated, row.reference, row.evaluator_version,
                          series.constraint_set)


def check_constraint_set(spec: MethodSpec, constraint_set: str | None) -> None:
    """A guided method samples with a constraint set, an unguided one with none."""
    if spec.guided and not constraint_set:
        raise BdgenError(f"guided method {spec.format()} needs the identity of its "
                         "constraint set")
    if not spec.guided and constraint_set:
        raise BdgenError(f"method {spec.format()} is not guided: it samples with no "
                         "constraint set (measure one at evaluation instead)")
    if constraint_set is not None and (not isinstance(constraint_set, str)
                                       or len(constraint_set) > CONSTRAINT_SET_LEN):
        raise BdgenError(f"constraint set identity must be a string of at most "
                         f"{CONSTRAINT_SET_LEN} characters, got {constraint_set!r}")


def _drop_measurements(s: Session, gen: GenerationRun) -> list[int]:
    """Delete the measurements of an unguided run against constraint sets (its rows in the
    sets' series, :meth:`Evaluations._measured_run`) when the run is redone or fails: they
    describe samples that are gone. Returns the series whose summaries change."""
    series = s.get(Series, gen.series_pk)
    if series is None or series.constraint_set:
        return []
    twins = s.execute(select(GenerationRun.id, GenerationRun.series_pk)
                      .join(Series, Series.id == GenerationRun.series_pk)
                      .where(Series.model_pk == series.model_pk,
                             Series.method_pk == series.method_pk,
                             Series.num_samples == series.num_samples,
                             Series.steps == series.steps, Series.constraint_set != "",
                             GenerationRun.seed == gen.seed,
                             GenerationRun.constraint_set.is_(None))).all()
    if not twins:
        return []
    ids = [t.id for t in twins]
    s.execute(delete(EvaluationRun).where(EvaluationRun.generation_run_pk.in_(ids)))
    s.execute(delete(GenerationRun).where(GenerationRun.id.in_(ids)))
    s.flush()
    return sorted({t.series_pk for t in twins})


class GenerationRuns(Claims, Identities):
    """The life of a generation run row: running -> succeeded | failed."""

    def start_generation_run(self, model_id: str, method: MethodSpec | str, seed: int,
                             num_samples: int, steps: int, *,
                             mlflow_run_id: str | None = None, no_mlflow: bool = False,
                             force: bool = False, constraint_set: str | None = None) -> int:
        """Insert (or take over a failed or dead running) generation run row, status
        running, claimed by this process; its row id.

        ``constraint_set``: identity of the set a guided method samples with (part of the
        run's identity; required for guided methods, refused for unguided ones).
        A succeeded run with the same identity is an error unless ``force`` (which discards
        its evaluations: they described the old samples). A run another live process is
        generating is an error naming that process (:mod:`bdgen.store.claims`).
        """
        got = self.start_generation_claim(model_id, method, seed, num_samples, steps,
                                          mlflow_run_id=mlflow_run_id, no_mlflow=no_mlflow,
                                          force=force, constraint_set=constraint_set)
        assert got.run_id is not None
        return got.run_id

    def start_generation_claim(self, model_id: str, method: MethodSpec | str, seed: int,
                               num_samples: int, steps: int, *,
                               mlflow_run_id: str | None = None, no_mlflow: bool = False,
                               force: bool = False,
                               constraint_set: str | None = None) -> GenerationClaim:
        """:meth:`start_generation_run` returning the claim too (to renew while working)."""
        got = self._claim_generation(model_id, method, seed, num_samples, steps,
                                     no_mlflow=no_mlflow, mlflow_run_id=mlflow_run_id,
                                     force=force, constraint_set=constraint_set)
        if got.done:
            raise BdgenError(
                f"generation run {got.run_id} ({model_id}, {method_spec(method).format()}, "
                f"seed {seed}, n {num_samples}, steps {steps}) already succeeded; use force "
                "to redo it")
        if not got.won:
            assert got.holder is not None
            raise BdgenError(
                f"generation run {got.run_id} ({model_id}, {method_spec(method).format()}, "
                f"seed {seed}) is being generated by {got.holder.describe()}; wait for it "
                f"or stop that process (a dead claim is taken over after "
                f"{claim_ttl().total_seconds():.0f} s)")
        return got

    def claim_generation_run(self, model_id: str, method: MethodSpec | str, seed: int,
                             num_samples: int, steps: int, *, no_mlflow: bool = False,
                             constraint_set: str | None = None) -> GenerationClaim:
        """Claim a generation run for this process (sweeps): ``.won`` with the row id and
        the claim, or not won because it is done (``.done``) or another live process has
        it (``.holder``). A failed row, or a running row whose claim is dead, is taken over.

        The claim is the insert of a ``job_claims`` row under its unique constraint, in the
        same transaction as the run row, so of N processes racing for one identity exactly
        one wins, on SQLite and PostgreSQL alike.
        """
        return self._claim_generation(model_id, method, seed, num_samples, steps,
                                      no_mlflow=no_mlflow, constraint_set=constraint_set)

    def _claim_generation(self, model_id: str, method: MethodSpec | str, seed: int,
                          num_samples: int, steps: int, *, no_mlflow: bool,
                          mlflow_run_id: str | None = None, force: bool = False,
                          constraint_set: str | None = None) -> GenerationClaim:
        for name, v in (("seed", seed), ("num_samples", num_samples), ("steps", steps)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise BdgenError(f"{name} must be an integer, got {v!r}")
        spec = method_spec(method)
        check_constraint_set(spec, constraint_set)
        self.get_or_create_method(spec)
        now = utcnow()
        with self.session() as s:
            model_pk = self._model_pk(s, model_id)
            series = self._series(s, model_pk, self._method(s, spec).id, num_samples, steps,
                                  constraint_set)
            key = {"series_pk": series.id, "seed": seed}
            current = (select(GenerationRun).filter_by(**key)
                       .execution_options(populate_existing=True))
            row = s.scalars(current).one_or_none()
            if row is not None and row.status == "succeeded" and not force:
                return GenerationClaim(row.id, None, None, done=True)
            attempt = claim_in(s, "generation", generation_key(series.id, seed))
            if attempt.claim is None:
                return GenerationClaim(row.id if row else None, None, attempt.holder)
            # Read the row again now that the claim is ours: on PostgreSQL the holder we
            # replaced may have finished it (row succeeded + claim released, committed)
            # after our first read. Keeping the stale row would win a claim on a done run
            # (whose stale values, written back, change nothing: the row stays succeeded
            # and nothing would ever release the claim).
            row = s.scalars(current).one_or_none()
            if row is not None and row.status == "succeeded" and not force:
                release_claim_in(s, attempt.claim)
                return GenerationClaim(row.id, None, None, done=True)
            existed = row is not None
            if row is None:
                row = GenerationRun(**key)
                s.add(row)
            else:
                s.execute(delete(EvaluationRun).where(EvaluationRun.generation_run_pk == row.id))
            row.status, row.started_at, row.finished_at, row.duration_s = "running", now, None, None
            row.samples_path = row.samples_sha256 = row.error = None
            row.code_version, row.host = code_version(), hostname()
            row.mlflow_run_id, row.no_mlflow, row.provenance = (mlflow_run_id, no_mlflow,
                                                               BDGEN_PROVENANCE)
            row.constraint_set = constraint_set
            s.flush()
            if existed:  # its evaluations are gone: the series' summaries change
                summaries.refresh(s.connection(), [series.id, *_drop_measurements(s, row)])
            return GenerationClaim(row.id, attempt.claim, None)

    def finish_generation_run(self, run_id: int, sha256: str, path: str | Path, *,
                              claim: Claim | None = None, mlflow_run_id: str | None = None,
                              duration_s: float | None = None) -> None:
        """Mark a running generation run succeeded, with its samples file and hash, and
        drop its claim.

        ``claim``: the claim the caller holds on the run (from
        :meth:`start_generation_claim` / :meth:`claim_generation_run`, possibly taken by
        another process: a sweep's driver claims, its worker finishes). Only that claim is
        dropped, matched by its token. A holder whose claim is no longer its own (taken
        over while it was frozen past the lease expiry, or the run finished or failed
        elsewhere) gets :class:`~bdgen.store.claims.ClaimLost` and nothing is recorded:
        the new holder's claim, row and samples stand. Without ``claim`` the caller must
        be free to claim the run itself (no live holder other than this process;
        :func:`~bdgen.store.claims.settle_in`).
        """
        now = utcnow()
        with self.session() as s:
            row = s.get(GenerationRun, run_id)
            if row is None:
                raise BdgenError(f"generation run {run_id} not found in {redact(self.url)}")
            settle_in(s, "generation", generation_key(row.series_pk, row.seed), claim,
                      f"generation run {run_id}")
            s.refresh(row)  # as it is now that the claim was checked (PostgreSQL)
            if row.status == "succeeded":
                raise BdgenError(f"generation run {run_id} is already finished")
            row.status, row.finished_at, row.error = "succeeded", now, None
            row.samples_sha256, row.samples_path = sha256, str(path)
            row.duration_s = duration_s if duration_s is not None else (
                (now - row.started_at).total_seconds() if row.started_at else None)
            if mlflow_run_id is not None:
                row.mlflow_run_id = mlflow_run_id
            s.flush()  # a failed run that succeeds again counts its evaluations again
            summaries.refresh(s.connection(), [row.series_pk])

    def fail_run(self, run_id: int, error: str, *, kind: str = "generation",
                 claim: Claim | None = None) -> None:
        """Mark a run (``kind``: generation | evaluation | denoising) failed with a reason,
        and drop its claim.

        ``claim``: the claim the caller holds on the run; as for
        :meth:`finish_generation_run`, only that claim is dropped, and a holder that lost
        it gets :class:`~bdgen.store.claims.ClaimLost` with nothing recorded (the run is
        someone else's now: failing it would discard their work). Without ``claim`` the
        caller may fail a run nobody holds, or one whose holder is this process or dead
        (a sweep failing the rows of a worker that died); a live holder's run is an
        error.
        """
        kinds: dict[str, type[GenerationRun | EvaluationRun | DenoisingEvaluation]] = {
            "generation": GenerationRun, "evaluation": EvaluationRun,
            "denoising": DenoisingEvaluation}
        cls = kinds.get(kind)
        if cls is None:
            raise BdgenError(f"unknown run kind {kind!r}; valid: generation, evaluation, "
                             "denoising")
        now = utcnow()
        with self.session() as s:
            row = cast("GenerationRun | EvaluationRun | DenoisingEvaluation | None",
                       s.get(cls, run_id))
            if row is None:
                raise BdgenError(f"{kind} run {run_id} not found in {redact(self.url)}")
            settle_in(s, *_claim_of(s, row), claim, f"{kind} run {run_id}")
            s.refresh(row)
            row.status, row.finished_at, row.error = "failed", now, str(error)[:2000]
            if row.started_at:
                row.duration_s = (now - row.started_at).total_seconds()
            if not isinstance(row, DenoisingEvaluation):  # its evaluations no longer count
                s.flush()
                dropped = _drop_measurements(s, row) if isinstance(row, GenerationRun) else []
                summaries.refresh(s.connection(), [row.series_pk, *dropped])

    def link_mlflow_run(self, kind: str, row_id: int, mlflow_run_id: str) -> None:
        """Record ``mlflow_run_id`` on a generation/evaluation row (and clear ``no_mlflow``)."""
        kinds: dict[str, type[GenerationRun | EvaluationRun]] = {
            "generation": GenerationRun, "evaluation": EvaluationRun}
        cls = kinds[kind]
        with self.session() as s:
            s.execute(update(cls).where(cls.id == row_id)
                      .values(mlflow_run_id=mlflow_run_id, no_mlflow=False))

    def link_model_run(self, model_id: str, mlflow_run_id: str) -> None:
        """Record the MLflow run that trained ``model_id``."""
        with self.session() as s:
            s.execute(update(Model).where(Model.model_id == model_id)
                      .values(mlflow_run_id=mlflow_run_id))
