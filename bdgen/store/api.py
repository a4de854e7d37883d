"""The store's public API: one :class:`Store` class, assembled from one module per concept.

Everything others call lives on :class:`Store`::

    store = Store.open(url)                   # a URL or a SQLite path (see pipeline.store)
    store.get_or_create_model("v1-loglinear-0123456789", "v1", "loglinear", ...)
    gen = store.start_generation_run("v1-loglinear-0123456789", "llada_topp0.9_no_remask",
                                     seed=42, num_samples=1000, steps=100)
    store.finish_generation_run(gen, sha256, path)
    ev = store.record_evaluation(gen, {"eval/validity_rate": 1.0, ...}, reference="...")
    store.method_results(model="v1-loglinear-0123456789", where={"unmasking": "llada"})

============================  ====================================================
module                        what :class:`Store` gets from it
============================  ====================================================
:mod:`~bdgen.store.base`      ``open``, ``close``, ``session``, ``read_session``
:mod:`~bdgen.store.identities` datasets, models, methods (get or create)
:mod:`~bdgen.store.runs`      generation runs: start, claim, finish, fail, link
:mod:`~bdgen.store.evaluations` per-seed and denoising metrics
:mod:`~bdgen.store.results_import` result files (``bdgen import-legacy``)
:mod:`~bdgen.store.lookups`   runs, checkpoints and pending work by identity
:mod:`~bdgen.store.results`   ``method_results``, ``summary_results``, aggregates
:mod:`~bdgen.store.links`     compare-and-set links to MLflow runs (who creates a run)
:mod:`~bdgen.store.listing`   ``list_runs``, ``list_models`` (``bdgen runs|models``)
============================  ====================================================

Lookups return the dataclasses of :mod:`bdgen.store.records`; run ids are the integer
primary keys of the run rows.
"""

from __future__ import annotations

from bdgen.store.evaluations import DEFAULT_EVALUATOR_VERSION, DEFAULT_REFERENCE
from bdgen.store.links import MlflowLinks
from bdgen.store.listing import Listing, ModelListing, RunListing
from bdgen.store.lookups import Lookups
from bdgen.store.normalise import normalise_metrics
from bdgen.store.records import (
    CheckpointModel,
    EvaluationRunInfo,
    GenerationRunInfo,
    ImportedRun,
    ModelCheckpoint,
)
from bdgen.store.results import Results
from bdgen.store.results_import import (
    IMPORT_PROVENANCE,
    IMPORTED_V1_EVALUATOR,
    FileReport,
    ResultFileImports,
)
from bdgen.store.runs import GenerationRuns


class Store(GenerationRuns, ResultFileImports, Lookups, Results, MlflowLinks, Listing):
    """A results store (one database). Open with :meth:`open`."""


__all__ = ["DEFAULT_EVALUATOR_VERSION", "DEFAULT_REFERENCE", "IMPORTED_V1_EVALUATOR",
           "IMPORT_PROVENANCE", "CheckpointModel", "EvaluationRunInfo", "FileReport",
           "GenerationRunInfo",
           "ImportedRun", "ModelCheckpoint", "ModelListing", "RunListing", "Store",
           "normalise_metrics"]
