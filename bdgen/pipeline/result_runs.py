"""The shape of results in MLflow: one parent run per result, the seed runs as children.

A *result* is what the leaderboard ranks: (model, method, num_samples, steps, constraint
set) over its seeds (a store series). Its parent run (``bdgen.kind=result``, named by the method) is
created once (:mod:`.mlflow_links`) and carries the aggregates over the seeds counted so
far: for every metric ``<metric>`` (mean), ``<metric>_std`` (population std) and ``n``
(seeds; ``<metric>_n`` where a metric has fewer), logged at step ``n``. The numbers are
the store's ``metric_summaries`` read back through :meth:`Store.summary_results` (the
leaderboard's own path), never recomputed here, and they are re-logged whenever a seed
lands, so MLflow's latest value is the aggregate over the most seeds. The seed runs
(generate, evaluate, legacy-import) carry ``mlflow.parentRunId``, so the MLflow UI nests
them and its compare/chart views put methods side by side with their spread.
"""

from __future__ import annotations

from dataclasses import dataclass

from bdgen.eval.aggregate import short_constraint_set
from bdgen.pipeline.mlflow_links import link_run, meta_link
from bdgen.store.api import Store
from bdgen.tracking import Tracker

KIND = "result"


@dataclass(frozen=True)
class ResultKey:
    """The identity of one result (a store series)."""

    model_id: str
    method: str
    num_samples: int
    steps: int
    constraint_set: str = ""  # of the series ("" none): two sets are two results

    def tags(self) -> dict[str, str | None]:
        cs = f"/{short_constraint_set(self.constraint_set)}" if self.constraint_set else ""
        return {"bdgen.model_id": self.model_id, "bdgen.method": self.method,
                "bdgen.num_samples": str(self.num_samples), "bdgen.steps": str(self.steps),
                "bdgen.constraint_set": self.constraint_set or None,
                "bdgen.result": f"{self.model_id}/{self.method}/n{self.num_samples}"
                                f"/s{self.steps}{cs}"}

    @property
    def name(self) -> str:
        """The run name: the method (and the constraint set's tag, when there is one)."""
        cs = f" #{short_constraint_set(self.constraint_set)}" if self.constraint_set else ""
        return f"{self.method}{cs}"

    def where(self) -> dict[str, object]:
        """The store filter that selects exactly this series."""
        return {"method": self.method, "num_samples": self.num_samples, "steps": self.steps,
                "constraint_set": self.constraint_set}


@dataclass(frozen=True)
class DatasetRef:
    """A dataset as an MLflow dataset input."""

    name: str
    dataset_id: str
    source: str


def dataset_ref(dataset_id: str, source: str) -> DatasetRef:
    """``synthetic-0123abcd4567`` -> name ``synthetic``, digest the id."""
    return DatasetRef(dataset_id.rsplit("-", 1)[0] or dataset_id, dataset_id, source)


def result_parent(store: Store, tracker: Tracker, experiment: str, key: ResultKey,
                  dataset: DatasetRef | None = None) -> str | None:
    """The parent run of ``key`` in ``experiment`` (created on first use); None offline."""
    if not tracker.enabled:
        return None

    def create(claim: str) -> str:
        tags = {**key.tags(), "bdgen.dataset_id": dataset.dataset_id if dataset else None}
        run_id = tracker.create_parent_run(
            key.name, experiment, tags, claim=claim,
            params={"model_id": key.model_id, "method": key.method,
                    "num_samples": key.num_samples, "steps": key.steps,
                    "constraint_set": key.constraint_set or None})
        if dataset is not None:
            tracker.run_for(run_id).log_dataset(dataset.name, dataset.dataset_id,
                                                dataset.source, context="evaluation")
        return run_id

    run_id, _ = link_run(meta_link(store, tracker, experiment, key.model_id, key.method,
                                   key.num_samples, key.steps, key.constraint_set),
                         tracker, experiment, create)
    return run_id


def aggregate_metrics(store: Store, key: ResultKey) -> tuple[dict[str, float], tuple[int, ...]]:
    """The parent's metrics from the store's summaries, and the seeds counted."""
    found = [r for r in store.summary_results(model=key.model_id, where=key.where())
             if r.constraint_set == key.constraint_set]  # the filter also takes prefixes
    if not found:
        return {}, ()
    result = found[0]
    n = len(result.seeds)
    out: dict[str, float] = {"n": float(n)}
    for name, agg in result.metrics.items():
        out[name] = agg.mean
        out[f"{name}_std"] = agg.std
        if agg.n != n:
            out[f"{name}_n"] = float(agg.n)
    return out, result.seeds


def log_aggregates(store: Store, tracker: Tracker, parent: str | None, key: ResultKey) -> None:
    """Re-log the parent's aggregates after a seed landed (or an import), at step n."""
    if parent is None or not tracker.enabled:
        return
    metrics, seeds = aggregate_metrics(store, key)
    if not metrics:
        return
    run = tracker.run_for(parent)
    run.log_metrics(metrics, step=len(seeds))
    run.set_tags({"bdgen.seeds": ",".join(map(str, seeds))})
