"""``bdgen train``: train a v1 model, or v2 with ``--noise learned`` (see bdgen.pipeline.train)."""

from __future__ import annotations

from pathlib import Path

import click

from bdgen.cli.options import ConfigDefault, device_option


def _config():
    from bdgen.diffusion.trainer import TrainConfig

    return TrainConfig()


def _cfg(name: str, field: str | None = None, **kwargs):
    """An option defaulting to ``TrainConfig().<field>``."""
    return click.option(name, cls=ConfigDefault, config=_config,
                        field=field or name.lstrip("-").replace("-", "_"), **kwargs)


@click.command()
@click.option("--dataset", "dataset", required=True, type=click.Path(dir_okay=False),
              help="Prepared dataset file (from `bdgen data prepare`).")
@click.option("--noise", type=click.Choice(["loglinear", "linear", "cosine", "learned"]),
              default="loglinear", show_default=True, help="Noise schedule.")
@click.option("--model", type=click.Choice(["small", "base", "tiny"]), default="small",
              show_default=True, help="Denoiser size preset.")
@_cfg("--steps", type=int,
      help="Total optimiser steps (legacy: 500 epochs of RPLAN = 126,000).")
@_cfg("--batch-size", type=int)
@click.option("--is-mode", type=click.Choice(["unbiased", "uncorrected", "off", "legacy"]),
              default=None,
              help="Importance sampling of t: unbiased (divide by q(t)), uncorrected (no "
                   "1/q: the w(t)^2 objective of the original code; alias legacy) or off "
                   "(uniform t). [default: unbiased; off for --noise learned, which only "
                   "allows off]")
@_cfg("--checkpoint-every", type=int)
@_cfg("--val-every", type=int)
@_cfg("--log-every", type=int,
      help="Steps between progress-bar loss updates (the only host syncs).")
@click.option("--out", type=click.Path(file_okay=False),
              help="Run directory [default: <workspace>/artifacts/models/<run-name>].")
@click.option("--resume", is_flag=True, help="Continue from the run's latest checkpoint.")
@device_option("Training device.")
@_cfg("--seed", type=int)
@click.option("--compile", "compile_", is_flag=True,
              help="torch.compile the training loss (v2: the denoiser).")
@_cfg("--compile-mode",
      help="torch.compile mode; 'reduce-overhead' replays CUDA graphs (fastest on GPU).")
@_cfg("--precision", type=click.Choice(["fp32", "bf16"]),
      help="Denoiser forward in float32 or bfloat16 mixed precision (about 1.5x "
                   "faster on CPUs with AVX512-BF16/AMX and on tensor-core GPUs; part of the "
                   "run's identity).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--no-mlflow", is_flag=True,
              help="Do not log to MLflow (in a workspace the run is tracked by default).")
def train(dataset: str, noise: str, model: str, steps: int, batch_size: int,
          is_mode: str | None,
          checkpoint_every: int, val_every: int, log_every: int, out: str | None, resume: bool,
          device: str, seed: int, compile_: bool, compile_mode: str, precision: str,
          quiet: bool,
          no_mlflow: bool) -> None:
    """Train a denoiser (v1: fixed noise schedule; v2: --noise learned, with a rate network)
    and write checkpoints."""
    from bdgen.diffusion.trainer import TrainConfig
    from bdgen.pipeline.context import job_workspace
    from bdgen.pipeline.train import train_model

    if is_mode is None:
        is_mode = "off" if noise == "learned" else "unbiased"

    config = TrainConfig(steps=steps, batch_size=batch_size, is_mode=is_mode, seed=seed,
                         checkpoint_every=checkpoint_every, val_every=val_every,
                         log_every=log_every, compile=compile_,
                         compile_mode=compile_mode, precision=precision)
    ws = job_workspace(out)
    if ws is not None:  # one tracked run: MLflow, store rows, DVC-tracked checkpoint
        from bdgen.pipeline.tracked_train import tracked_train

        rec = tracked_train(ws, dataset, noise=noise, model=model, config=config,
                            out_dir=out, resume=resume, device=device,
                            progress=not quiet, no_mlflow=no_mlflow)
        if rec.already_finished:
            click.echo(f"run {Path(rec.checkpoint).parent} already finished at step "
                       f"{rec.step}: nothing to do (model {rec.model_id}, {rec.checkpoint} "
                       "unchanged)")
            return
        click.echo(f"model {rec.model_id}: step {rec.step}, final loss {rec.final_loss:.4f}, "
                   f"{rec.checkpoint} (sha256 {rec.sha256[:12]}, MLflow run "
                   f"{rec.mlflow_run_id or 'none'})")
        return
    res = train_model(dataset, noise=noise, model=model, config=config, out_dir=out,
                   resume=resume, device=device, progress=not quiet)
    if res.already_finished:
        click.echo(f"run {res.run_dir} already finished at step {res.step}: nothing to do "
                   f"({res.checkpoint} unchanged)")
        return
    val = (f", val loss {res.val.loss:.4f} (node acc {res.val.node_accuracy:.3f}, edge acc "
           f"{res.val.edge_accuracy:.3f})" if res.val else "")
    click.echo(f"trained to step {res.step} (from {res.resumed_from}): final loss "
               f"{res.final_loss:.4f}{val}, {res.steps_per_s:.2f} steps/s, {res.checkpoint}")

