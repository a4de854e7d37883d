"""What the store has of a job's runs, read without the science: the records the tracked
jobs return for runs done already (:mod:`.tracked_generate`, :mod:`.tracked_evaluate`), and
:func:`stored_result`, a whole result stage's runs found done.

No torch here (nor mlflow): a ``dvc repro -f``, or a ``dvc repro`` after ``bdgen sweep
--params params.yaml``, starts one process per result stage whose runs are all in the store,
and such a stage decides so and writes its receipt without loading a model (issue 17.3).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from bdgen.diffusion.method import Method
from bdgen.errors import BdgenError
from bdgen.pipeline.context import JobContext
from bdgen.pipeline.workspace import Workspace
from bdgen.store.api import DEFAULT_EVALUATOR_VERSION, DEFAULT_REFERENCE, GenerationRunInfo
from bdgen.tracking import dvc_file
from bdgen.util.hashing import file_digests, file_sha256


@dataclass
class GenerationRecord:
    """What a tracked generation produced (or found already done)."""

    model_id: str
    method: str
    seed: int
    num_samples: int
    steps: int
    generation_run_id: int
    mlflow_run_id: str | None
    path: str               # relative to the workspace root (DVC-tracked)
    md5: str
    sha256: str
    skipped: bool = False   # already in the store, nothing done


@dataclass
class EvaluationRecord:
    generation_run_id: int
    evaluation_run_id: int
    mlflow_run_id: str | None
    model_id: str
    method: str
    seed: int
    samples_sha256: str
    metrics: dict[str, float]     # canonical name -> value (this seed)
    skipped: bool = False


@dataclass(frozen=True)
class VerifiedSamples:
    """A samples file whose sha256 matched the store's, with its digests."""

    path: Path
    md5: str
    sha256: str


def stored_generation(ctx: JobContext, model_id: str, method: str, seed: int, n: int,
                      steps: int, constraint_set: str | None = None
                      ) -> GenerationRecord | None:
    """The record of a generation the store has as succeeded (for a guided method: with
    this constraint set), or None."""
    row = ctx.store.find_generation_run(model_id, method, seed, n, steps, constraint_set)
    if row is None or row.status != "succeeded" or not row.samples_path:
        return None
    md5 = ""
    dvc = dvc_file(ctx.workspace.root / row.samples_path)
    if dvc.exists():
        md5 = yaml.safe_load(dvc.read_text())["outs"][0]["md5"]
    return GenerationRecord(model_id, method, seed, n, steps, row.id, row.mlflow_run_id,
                            row.samples_path, md5, row.samples_sha256 or "", skipped=True)


def verify_samples(ws: Workspace, info: GenerationRunInfo) -> VerifiedSamples:
    """The samples file of a generation run, after checking its sha256 against the store.

    Called before any metric is computed: a file changed or replaced since it was generated
    is refused (its metrics would describe other samples than the store says)."""
    if info.status != "succeeded" or not info.samples_path:
        raise BdgenError(f"generation run {info.id} has status {info.status} and no "
                         "samples file to evaluate")
    path = Path(info.samples_path)
    path = path if path.is_absolute() else ws.root / path
    if not path.is_file():
        raise BdgenError(f"samples file of generation run {info.id} is missing: {path} "
                         "(restore it with `dvc pull` / `dvc checkout` in the workspace)")
    md5, sha = file_digests(path)
    if sha != info.samples_sha256:
        raise BdgenError(f"samples file {path} does not match the store: sha256 "
                         f"{sha[:12]}... but generation run {info.id} recorded "
                         f"{str(info.samples_sha256)[:12]}...; refusing to evaluate")
    return VerifiedSamples(path, md5, sha)


def stored_evaluation(ctx: JobContext, info: GenerationRunInfo,
                      cs_id: str | None) -> EvaluationRecord | None:
    """The store's succeeded evaluation of the run (against ``cs_id``), as a skipped
    record; None when it has none."""
    prev = ctx.store.evaluation_of(info.id, DEFAULT_REFERENCE, DEFAULT_EVALUATOR_VERSION,
                                   constraint_set=cs_id)
    if prev is None or prev.status != "succeeded":
        return None
    return EvaluationRecord(info.id, prev.id, prev.mlflow_run_id, info.model_id, info.method,
                            info.seed, info.samples_sha256 or "",
                            ctx.store.evaluation_metrics(prev.id), skipped=True)


def stored_result(ws: Workspace, checkpoint: Path, method: str, seeds: Sequence[int],
                  num_samples: int, steps: int, *, no_mlflow: bool = False
                  ) -> tuple[list[GenerationRecord], list[EvaluationRecord]] | None:
    """The records ``tracked_generate`` then ``tracked_evaluate`` (unguided ``method``, every
    seed, denoising included) return when the store has everything they would do done:
    each seed's generation and its evaluation succeeded, its samples file matching the
    store's sha256, and the model's denoising metrics recorded. None when anything is left
    to do, or when the request is not one decided here (a guided method, a checkpoint the
    store has no single model for, a bad name or file): the caller runs the jobs then,
    which do the work or refuse the request as ever.

    The same lookups as the jobs' (:func:`stored_generation`, :func:`stored_evaluation`,
    :func:`verify_samples`) in the same order, so the records are the same; the model is
    known from the checkpoint's sha256 (:meth:`~bdgen.store.api.Store.model_of_checkpoint`)
    instead of loading it, and batch size and device, which only sampling uses, are not
    checked. The tracker is opened as a job opens it (an unreachable MLflow server fails
    here too) but never connected: nothing is logged.
    """
    seeds = [int(s) for s in seeds]
    if not seeds or not checkpoint.is_file():
        return None
    with JobContext.open(ws, no_mlflow) as ctx:
        model = ctx.store.model_of_checkpoint(file_sha256(checkpoint))
        if model is None:
            return None
        try:
            parsed = Method.parse(method).on_model(model.version)
        except BdgenError:
            return None
        if parsed.guided:
            return None
        name = parsed.format()
        runs = [stored_generation(ctx, model.model_id, name, s, num_samples, steps)
                for s in seeds]
        if any(r is None for r in runs):
            return None
        gens = [r for r in runs if r is not None]
        infos = [ctx.store.generation_run(r.generation_run_id) for r in gens]
        try:
            for info in infos:  # as the evaluation job: every file checked first
                verify_samples(ws, info)
        except BdgenError:
            return None
        found = [stored_evaluation(ctx, info, info.constraint_set or None) for info in infos]
        evals = [e for e in found if e is not None]
        if len(evals) < len(found) or ctx.store.model_needing_denoising(model.model_id):
            return None
        return gens, evals
