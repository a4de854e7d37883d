"""The sweep job: a models x methods x seeds grid generated (and evaluated) outside DVC.

Safe to start as N parallel processes (e.g. one per GPU): each generation run is claimed
atomically in the store, and a process that loses the claim skips it. A failing run stops
the sweep with its error (its store row is marked failed and is taken over by the next
sweep).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from bdgen.pipeline.tracked_evaluate import EvaluationRecord, tracked_evaluate
from bdgen.pipeline.tracked_generate import GenerationRecord, tracked_generate
from bdgen.pipeline.workspace import Workspace


@dataclass
class SweepSummary:
    """What one sweep process did."""

    generated: list[GenerationRecord] = field(default_factory=list)  # by this process
    skipped: list[GenerationRecord] = field(default_factory=list)    # already in the store
    evaluated: list[EvaluationRecord] = field(default_factory=list)

    def line(self) -> str:
        return (f"sweep: {len(self.generated)} run(s) done here, {len(self.skipped)} "
                "already in the store")


def sweep(ws: Workspace, models: Sequence[str], methods: Sequence[str], seeds: Sequence[int],
          num_samples: int = 1000, steps: int = 100, *, batch_size: int | None = None,
          device: str = "auto", evaluate: bool = True,
          no_mlflow: bool = False) -> SweepSummary:
    """Generate every (model, method, seed) the store does not have yet, claiming each run;
    with ``evaluate`` evaluate the runs this process generated, model by model."""
    summary = SweepSummary()
    for model in models:
        records = tracked_generate(ws, model, methods, seeds, num_samples, steps,
                                   batch_size=batch_size, device=device, no_mlflow=no_mlflow,
                                   claim=True)
        mine = [r for r in records if not r.skipped]
        summary.generated += mine
        summary.skipped += [r for r in records if r.skipped]
        if evaluate and mine:
            summary.evaluated += tracked_evaluate(
                ws, [r.generation_run_id for r in mine], no_mlflow=no_mlflow)
    return summary
