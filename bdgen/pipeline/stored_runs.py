"""What the store has of a job's runs, read without the science: the records the tracked
jobs return for runs done already (:mod:`.tracked_generate`, :mod:`.tracked_evaluate`).

No torch here (nor mlflow), so that finding runs done needs no model loaded (issue 17.3).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from bdgen.errors import BdgenError
from bdgen.pipeline.context import JobContext
from bdgen.pipeline.workspace import Workspace
from bdgen.store.api import DEFAULT_EVALUATOR_VERSION, DEFAULT_REFERENCE, GenerationRunInfo
from bdgen.tracking import dvc_file
from bdgen.util.hashing import file_digests


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
