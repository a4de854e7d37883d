"""What the store's lookups return: small frozen dataclasses, not ORM rows or dicts, so
callers never hold a session and mypy checks every field they read."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelCheckpoint:
    """The checkpoint the store recorded for a model (legacy models have none)."""

    model_id: str
    path: str | None
    sha256: str | None


@dataclass(frozen=True)
class CheckpointModel:
    """The model the store recorded for a checkpoint file: what names the file's runs."""

    model_id: str
    version: str                # "v1" | "v2" (v2: the v2_ prefix of its method names)


@dataclass(frozen=True)
class GenerationRunInfo:
    """A generation run with the identity it belongs to."""

    id: int
    status: str                 # running | succeeded | failed
    model_id: str
    method: str
    seed: int
    num_samples: int
    steps: int
    samples_path: str | None    # relative to the workspace root (bdgen runs)
    samples_sha256: str | None
    mlflow_run_id: str | None
    provenance: str             # "bdgen" | "legacy import"
    constraint_set: str = ""    # the series' set (sampled with or measured against); "" none


@dataclass(frozen=True)
class EvaluationRunInfo:
    """An evaluation run of one generation run (for one reference and evaluator)."""

    id: int
    status: str
    mlflow_run_id: str | None


@dataclass(frozen=True)
class ImportedRun:
    """One seed imported from a result file: its generation and evaluation rows."""

    model_id: str
    method: str
    seed: int
    num_samples: int
    steps: int
    generation_run_id: int
    evaluation_run_id: int
    mlflow_run_id: str | None
    constraint_set: str = ""    # of the series ("" none)
