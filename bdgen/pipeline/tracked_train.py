"""The tracked training job: one model as one MLflow run (config as params, the dataset as
an MLflow dataset input, the loss and validation curves logged live with their steps,
a loss-curve plot, the config and the checkpoint's DVC pointer as artifacts), its final
checkpoint DVC-tracked, dataset and model rows in the store (order: :mod:`.context`).

Live: every ``train_log.jsonl`` row goes to :class:`~bdgen.tracking.live.LiveMetrics` as it
is written (flushed at most every ``live_every_s``), so the MLflow UI shows the curve
growing; without a terminal a :class:`~bdgen.pipeline.progress.StepProgress` logs a
progress line (losses, rate, ETA) every 10 s instead of tqdm's bar.

Killed runs: the buffer is also flushed each time a checkpoint is saved, so a run killed
outright (SIGKILL, OOM: no cleanup) has its curve in MLflow at least up to its last
checkpoint, which is where ``--resume`` continues (the resumed run re-logs the curve up to
that checkpoint from ``train_log.jsonl``, and the rest live). Without that flush, what a kill
left in MLflow depended on whether ``live_every_s`` had happened to elapse."""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bdgen.data.dataset import PreparedDataset
from bdgen.diffusion.trainer import TrainConfig
from bdgen.errors import BdgenError
from bdgen.model.checkpoint import load_checkpoint, model_id
from bdgen.model.denoiser import model_preset
from bdgen.pipeline.checkpoints import register_checkpoint
from bdgen.pipeline.context import JobContext
from bdgen.pipeline.heartbeat import Heartbeat
from bdgen.pipeline.plots import loss_curves
from bdgen.pipeline.progress import StepProgress, on_terminal
from bdgen.pipeline.train import (
    FINAL_NAME,
    SPLIT_FRACTIONS,
    SPLIT_SEED,
    finished_step,
    latest_checkpoint,
    noise_config,
    run_name,
    train_model,
)
from bdgen.pipeline.workspace import Workspace
from bdgen.tracking import TrackedRun, dvc_file, experiment_name, track
from bdgen.tracking.live import FLUSH_EVERY_S, LiveMetrics
from bdgen.util.atomic import atomic_write_json
from bdgen.util.faults import fault_point
from bdgen.util.hashing import file_digests

log = logging.getLogger(__name__)

#: The ``train_log.jsonl`` fields logged as MLflow metric series (``curve/<field>``).
CURVES = ("train_loss", "lr", "gumbel_temp", "val_loss", "val_node_accuracy",
          "val_edge_accuracy")


@dataclass
class TrainRecord:
    model_id: str
    checkpoint: str          # relative to the workspace root (DVC-tracked)
    md5: str
    sha256: str
    mlflow_run_id: str | None
    dataset_id: str
    step: int
    final_loss: float
    already_finished: bool = False   # --resume of a finished run: a no-op


def tracked_train(ws: Workspace, dataset_path: str | Path, *, noise: str = "loglinear",
                  model: str = "small", config: TrainConfig | None = None,
                  out_dir: str | Path | None = None, resume: bool = False,
                  device: str = "auto", progress: bool = True, no_mlflow: bool = False,
                  reuse: bool = False, live_every_s: float = FLUSH_EVERY_S,
                  on_metrics: Callable[[dict], None] | None = None) -> TrainRecord:
    """Train one model as one tracked run.

    ``reuse`` (pipelines): a run directory of the same identity that already holds the
    final checkpoint at ``config.steps`` is reused as is (no new run); one with fewer steps
    is resumed. ``live_every_s``: the bound on MLflow flushes while training;
    ``on_metrics(row)`` is called after each training-log row was handed to MLflow.
    ``resume`` of a finished run is a no-op (``already_finished``: no MLflow
    run, nothing rewritten). The run directory is claimed while training
    (:mod:`bdgen.store.claims`): a second process training it at the same time is refused.
    """
    with JobContext.open(ws, no_mlflow) as ctx:
        ctx.tracker.connect()  # a training always logs (or looks up its finished run)
        config = config or TrainConfig()
        ds = PreparedDataset.load(dataset_path)
        if out_dir is None:  # the identity-derived run directory of *this* workspace
            split = {"seed": SPLIT_SEED, "fractions": list(SPLIT_FRACTIONS)}
            out_dir = ws.model_dir(run_name(noise_config(noise), ds.dataset_hash,
                                            model_preset(model).to_dict(), config, split))
        run_dir = Path(out_dir)
        attempt = ctx.store.try_claim("training", ctx.rel(run_dir))
        if attempt.claim is None:
            assert attempt.holder is not None
            raise BdgenError(f"{ctx.rel(run_dir)} is being trained by "
                             f"{attempt.holder.describe()}; wait for it or stop that process")
        try:
            with Heartbeat(ctx.store, attempt.claim):
                if resume and finished_step(run_dir, config.steps) is not None:
                    return _finished_record(ctx, run_dir, ds.dataset_id)
                return _train_tracked(ctx, ds, dataset_path, run_dir, noise=noise,
                                      model=model, config=config, resume=resume,
                                      device=device, progress=progress, reuse=reuse,
                                      live_every_s=live_every_s, on_metrics=on_metrics)
        finally:
            ctx.store.release_claim(attempt.claim)


def _train_tracked(ctx: JobContext, ds: PreparedDataset, dataset_path: str | Path,
                   run_dir: Path, *, noise: str, model: str, config: TrainConfig,
                   resume: bool, device: str, progress: bool, reuse: bool,
                   live_every_s: float, on_metrics: Callable[[dict], None] | None
                   ) -> TrainRecord:
    """The MLflow run around :func:`train_model`, then DVC and the store rows."""
    ws = ctx.workspace
    params = {"dataset": {"id": ds.dataset_id, "path": ctx.rel(dataset_path),
                          "source": ds.source, "hash": ds.dataset_hash},
              "noise": noise, "model": model, "device": device, "resume": resume,
              "train": config.to_dict()}
    tags = {"bdgen.dataset_id": ds.dataset_id, "bdgen.noise": noise,
            "bdgen.model_preset": model}
    with ctx.tracker.open_run("train", f"{noise}-{model}", experiment_name(ds.dataset_id),
                              params, tags, run_name=f"train {noise}-{model}") as run:
        run.log_dataset(ds.dataset_id.rsplit("-", 1)[0], ds.dataset_id,
                        ctx.rel(dataset_path), "training")
        if ctx.inside(dataset_path):
            run.set_tags(track(ws.root, dataset_path).tags("dataset"))
        if reuse:
            done = _reusable(run_dir, config.steps)
            if done is True:
                return _reuse_checkpoint(ctx, run_dir, ds.dataset_id, run)
            resume = resume or done is False
        log_path = run_dir / "train_log.jsonl"
        latest = latest_checkpoint(run_dir) if resume and log_path.exists() else None
        if latest is not None:  # the curve up to where this run continues
            _log_curves(run, log_path, upto=load_checkpoint(latest).step)
        with LiveMetrics(run, every_s=live_every_s) as live, \
                StepProgress("train", config.steps, enabled=progress) as beat:
            def on_row(row: dict) -> None:
                live.add({f"curve/{k}": row[k] for k in CURVES if k in row}, row["step"])
                beat.update(row["step"], **{k: row[k] for k in ("train_loss", "val_loss")
                                            if k in row})
                if on_metrics:
                    on_metrics(row)
                fault_point("train.log-row")

            out = train_model(dataset_path, noise=noise, model=model, config=config,
                              out_dir=run_dir, resume=resume, device=device,
                              progress=progress and on_terminal(), on_metrics=on_row,
                              on_checkpoint_saved=lambda step: live.flush(), heartbeat=False)
        ref = track(ws.root, out.checkpoint)
        ckpt = load_checkpoint(out.checkpoint)
        mid = model_id(ckpt, ref.sha256)
        run.set_tags({"bdgen.model_id": mid, "bdgen.run_dir": ctx.rel(out.run_dir),
                      **ref.tags("checkpoint")})
        metrics = {"train/final_loss": out.final_loss, "train/steps_per_s": out.steps_per_s,
                   "train/wall_s": out.wall_s, "train/step": out.step}
        if out.val is not None:
            metrics.update({"val/loss": out.val.loss,
                            "val/node_accuracy": out.val.node_accuracy,
                            "val/edge_accuracy": out.val.edge_accuracy})
        run.log_metrics(metrics, step=out.step)
        if ctx.tracker.enabled:
            _log_artifacts(run, out.run_dir, out.checkpoint, params, f"{noise}-{model} {mid}")
        register_checkpoint(ctx.store, ckpt, ref.path, ref.sha256, mid, run.run_id)
        if run.run_id is not None:
            ctx.store.link_model_run(mid, run.run_id)
    return TrainRecord(mid, ref.path, ref.md5, ref.sha256, run.run_id, ds.dataset_id, out.step,
                       out.final_loss)


def _finished_record(ctx: JobContext, run_dir: Path, dataset_id: str) -> TrainRecord:
    """``--resume`` of a finished run: nothing trained, written or registered anew; the
    record of what is there (its model id and original MLflow run)."""
    final = run_dir / FINAL_NAME
    ckpt = load_checkpoint(final)
    md5, sha = file_digests(final)
    mid = model_id(ckpt, sha)
    found = ctx.tracker.find_runs(experiment_name(dataset_id),
                                  {"bdgen.kind": "train", "bdgen.model_id": mid})
    log.info("run %s already finished at step %d (model %s); nothing to do",
             ctx.rel(run_dir), ckpt.step, mid)
    return TrainRecord(mid, ctx.rel(final), md5, sha, found[-1] if found else None, dataset_id,
                       ckpt.step, math.nan, already_finished=True)


def _reusable(run_dir: Path, steps: int) -> bool | None:
    """True: the final checkpoint at ``steps`` is there; False: resumable checkpoints with
    fewer steps; None: nothing there."""
    latest = latest_checkpoint(run_dir) if run_dir.is_dir() else None
    if latest is None:
        return None
    step = load_checkpoint(latest).step
    if latest.name == FINAL_NAME and step == steps:
        return True
    if step > steps:
        raise BdgenError(f"{run_dir} holds a model trained for {step} steps, more than the "
                         f"{steps} asked for; remove it or raise the step count")
    return False


def _reuse_checkpoint(ctx: JobContext, run_dir: Path, dataset_id: str,
                      run: TrackedRun) -> TrainRecord:
    """An already trained model: re-register (idempotent), point at its original run."""
    final = run_dir / FINAL_NAME
    ref = track(ctx.workspace.root, final)
    ckpt = load_checkpoint(final)
    mid = model_id(ckpt, ref.sha256)
    found = ctx.tracker.find_runs(experiment_name(dataset_id),
                                  {"bdgen.kind": "train", "bdgen.model_id": mid})
    original = found[-1] if found else None
    run.set_tags({"bdgen.model_id": mid, "bdgen.reused_from_run": original,
                  **ref.tags("checkpoint")})
    register_checkpoint(ctx.store, ckpt, ref.path, ref.sha256, mid, original)
    return TrainRecord(mid, ref.path, ref.md5, ref.sha256, original or run.run_id, dataset_id,
                       ckpt.step, math.nan)


def _log_artifacts(run: TrackedRun, run_dir: Path, checkpoint: Path, params: dict,
                   title: str) -> None:
    """The loss-curve plot, the config, and the checkpoint's DVC pointer (what ``dvc pull``
    needs to restore the weights) on the training run."""
    log = run_dir / "train_log.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] \
        if log.exists() else []
    with tempfile.TemporaryDirectory() as d:
        if rows:
            run.log_artifact(loss_curves(rows, Path(d) / "loss_curve.png", title), "plots")
        config = Path(d) / "train_config.json"
        atomic_write_json(config, params, indent=2, sort_keys=True)
        run.log_artifact(config, "config")
    pointer = dvc_file(checkpoint)
    if pointer.exists():
        run.log_artifact(pointer, "checkpoint")


def _log_curves(run: TrackedRun, log: Path, upto: int) -> None:
    """The training-loss and validation curves up to step ``upto`` (the checkpoint a
    resumed run continues from; later rows of a killed run are redone live)."""
    if not log.exists():
        return
    rows = [r for r in (json.loads(line) for line in log.read_text().splitlines()
                        if line.strip()) if int(r["step"]) <= upto]
    for key in CURVES:
        # A resumed run appends to the log: keep the last value logged for each step.
        series = sorted({int(r["step"]): float(r[key]) for r in rows if key in r}.items())
        if series:
            run.log_metric_series(f"curve/{key}", series)
