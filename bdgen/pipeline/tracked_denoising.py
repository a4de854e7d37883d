"""The tracked denoising job: a model's seeded denoising metrics (spec §6.11), computed once
per model and stored at model level (they do not depend on the sampling method), in their
own MLflow run."""

from __future__ import annotations

import logging
import math
import time

from bdgen.data.dataset import PreparedDataset
from bdgen.errors import BdgenError
from bdgen.eval.registry import lookup
from bdgen.model.checkpoint import load_checkpoint
from bdgen.pipeline.context import JobContext
from bdgen.pipeline.evaluate import compute_denoising
from bdgen.pipeline.heartbeat import Heartbeat
from bdgen.store.claims import Claim, ClaimLost
from bdgen.tracking import experiment_name
from bdgen.util.faults import fault_point
from bdgen.util.hashing import file_sha256

log = logging.getLogger(__name__)


def denoise_model_once(ctx: JobContext, model_id: str) -> bool:
    """Record the denoising metrics of ``model_id`` unless the store has them (or the model
    has no checkpoint: imported results); True when this process recorded them.

    Computed once however many processes ask at the same time: the work is claimed first
    (``denoising`` claim on the model id); a process that loses the claim skips it (the
    holder records it), and one that wins checks again that nobody recorded it meanwhile.
    The metrics are recorded under that claim only: a process that lost it while it
    computed them (frozen past the lease expiry, the work taken over by another process)
    records nothing and skips the model, like a process that lost the claim at the start.
    """
    if ctx.store.model_needing_denoising(model_id) is None:
        return False
    ctx.tracker.connect()  # work to do: MLflow's store opens before the claim
    attempt = ctx.store.try_claim("denoising", model_id)
    if attempt.claim is None:
        assert attempt.holder is not None
        log.info("%s: denoising metrics are being computed by %s, skipped", model_id,
                 attempt.holder.describe())
        return False
    try:
        with Heartbeat(ctx.store, attempt.claim):
            return _denoise(ctx, model_id, attempt.claim)
    except ClaimLost as lost:  # the work is another process's now: it records the metrics
        log.warning("%s: denoising metrics not recorded: %s", model_id, lost)
        return False
    finally:  # recorded (claim already gone) or failed: free it for the next attempt
        ctx.store.release_claim(attempt.claim)


def _denoise(ctx: JobContext, model_id: str, claim: Claim) -> bool:
    todo = ctx.store.model_needing_denoising(model_id)
    if todo is None or todo.path is None or todo.sha256 is None:
        return False
    rel, sha = todo.path, todo.sha256
    path = ctx.workspace.root / rel
    if not path.exists() or file_sha256(path) != sha:
        raise BdgenError(f"checkpoint {rel} of model {model_id} is missing or does not match "
                         "the store's sha256; cannot compute its denoising metrics")
    ckpt = load_checkpoint(path)
    dataset = PreparedDataset.load(ctx.workspace.dataset_path(ckpt.dataset_id))
    t0 = time.perf_counter()
    computed = compute_denoising(path, dataset)
    # A t at which no real position was masked (e.g. a learned v2 rate that keeps almost
    # everything at t = 0.1) has no defined accuracy/CE: record only the defined values.
    metrics = {k: v for k, v in computed.items() if math.isfinite(v)}
    fault_point("denoising.computed")
    with ctx.tracker.open_run("denoising", f"{model_id}/denoising",
                              experiment_name(ckpt.dataset_id),
                              {"model_id": model_id, "checkpoint_sha256": sha},
                              {"bdgen.model_id": model_id},
                              run_name=f"denoising {model_id}") as run:
        ctx.store.record_denoising(model_id, metrics, claim=claim, mlflow_run_id=run.run_id,
                                   no_mlflow=not ctx.tracker.enabled,
                                   duration_s=time.perf_counter() - t0)
        run.log_metrics({lookup(k).name: v for k, v in metrics.items()})
    undefined = len(computed) - len(metrics)
    log.info("%s: denoising metrics recorded (%d values%s, %.1f s)", model_id, len(metrics),
             f", {undefined} undefined: nothing masked" if undefined else "",
             time.perf_counter() - t0)
    return True
