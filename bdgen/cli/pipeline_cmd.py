"""``bdgen pipeline <stage>`` (the commands ``dvc.yaml`` runs) and ``bdgen sweep``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from bdgen.cli.options import device_option, list_callback, seeds_option, split_list

_PARAMS = click.option("--params", "params_path", default="params.yaml", show_default=True,
                       type=click.Path(dir_okay=False), help="Pipeline parameters.")
_NO_MLFLOW = click.option("--no-mlflow", is_flag=True, help="Do not log to MLflow.")
_OUT = click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
                    help="Receipt / metrics file this stage writes.")


@click.group()
def pipeline() -> None:
    """The stages of dvc.yaml (run them with `dvc repro`; see README "Pipeline")."""


@pipeline.command()
@_PARAMS
@_OUT
def prepare(params_path: str, out: Path) -> None:
    """Create the workspace if needed and prepare the dataset of params `data`."""
    from bdgen.pipeline.stages import load_params, stage_prepare

    r = stage_prepare(load_params(params_path), out, params_path)
    click.echo(f"dataset {r['dataset_id']} -> {r['path']}")


@pipeline.command()
@click.argument("model_key")
@click.option("--data", "data_receipt", required=True,
              type=click.Path(dir_okay=False, path_type=Path))
@_PARAMS
@_OUT
@_NO_MLFLOW
def train(model_key: str, data_receipt: Path, params_path: str, out: Path,
          no_mlflow: bool) -> None:
    """Train params `models.MODEL_KEY`."""
    from bdgen.pipeline.stages import load_params, stage_train

    r = stage_train(load_params(params_path), model_key, data_receipt, out, params_path,
                    no_mlflow)
    click.echo(f"model {model_key}: {r['model_id']} -> {r['checkpoint']}")


@pipeline.command()
@click.argument("method")
@click.option("--model", "model_receipt", required=True,
              type=click.Path(dir_okay=False, path_type=Path))
@_PARAMS
@_OUT
@click.option("--headline", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="JSON of the result's headline metrics (means over seeds).")
@_NO_MLFLOW
def result(method: str, model_receipt: Path, params_path: str, out: Path, headline: Path,
           no_mlflow: bool) -> None:
    """Generate METHOD (a canonical name, one of params `methods`) with every seed of params
    `seeds` from a trained model's receipt, and evaluate each run (one process for the
    whole result)."""
    from bdgen.pipeline.stages import load_params, stage_result

    r = stage_result(load_params(params_path), model_receipt, method, out, headline,
                     params_path, no_mlflow)
    click.echo(f"{r['model_id']}/{r['method']}: {len(r['runs'])} seed(s) -> {headline}")


@pipeline.command()
@click.option("--models-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory of the train receipts (<model key>.json).")
@_PARAMS
@click.option("--markdown", "out_md", required=True,
              type=click.Path(dir_okay=False, path_type=Path))
@click.option("--plots", "plots", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="CSV of the headline metrics, one row per result (dvc plots).")
@click.option("--summary", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="DVC metrics file: the top result, its headline metrics and the "
                   "number of results.")
def leaderboard(models_dir: Path, params_path: str, out_md: Path, plots: Path,
                summary: Path | None) -> None:
    """Rank the methods of the models in params `models` and print the leaderboard."""
    from bdgen.pipeline.stages import load_params, stage_leaderboard

    params = load_params(params_path)
    receipts = [models_dir / f"{key}.json" for key in params["models"]]
    click.echo(stage_leaderboard(params, receipts, out_md, plots, params_path, summary))


@pipeline.command()
@click.option("--stop", is_flag=True, help="Stop them: no new stage goes to them, and each "
              "exits once its running stages have ended.")
def servers(stop: bool) -> None:
    """List the warm stage servers of this user (`dvc repro` starts one: README
    "Pipeline"), or stop them."""
    from bdgen.pipeline.stage_server import running_servers, stop_servers

    for pid, path in stop_servers() if stop else running_servers():
        click.echo(f"{'stopped' if stop else 'running'}: pid {pid}, {path}")


@click.command()
@click.option("--model", "--models", "models", multiple=True,
              callback=lambda c, p, v: split_list(v, paths=True),
              help="Checkpoint file (e.g. artifacts/models/<run>/checkpoint_final.pt) or "
                   "model id from the store (e.g. v1-loglinear-3fa9c0d2e1). Repeatable; a "
                   "comma list is accepted too.")
@click.option("--method", "--methods", "methods", multiple=True, callback=list_callback,
              help="Method name (repeatable; comma list accepted).")
@seeds_option()
@click.option("--num-samples", type=int, default=1000, show_default=True)
@click.option("--steps", type=int, default=100, show_default=True)
@click.option("--params", "params_path", default=None, type=click.Path(dir_okay=False),
              help="Take the grid (models from the train receipts, methods, seeds, sizes, "
                   "device, workspace) from this params.yaml; options given override it.")
@click.option("--batch-size", type=int, default=None)
@device_option("Sampling device (one process per GPU: --device cuda:K).")
@click.option("--evaluate/--no-evaluate", default=True, show_default=True,
              help="Evaluate every run of the grid and each model's denoising metrics.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local",
              show_default=True, help="local: this machine; ray: a Ray cluster.")
@click.option("--address", default=None,
              help="Ray cluster address (ray start --head ...); default: a local Ray.")
@click.option("--seed-batch/--no-seed-batch", default=False, show_default=True,
              help="Sample all seeds of a (model, method) in one batch (same samples per "
                   "seed; faster on a GPU).")
@click.option("--eval-workers", type=int, default=None,
              help="Local engine: evaluation processes [cores - 2, 1..8].")
@click.option("--wait/--no-wait", "wait_for_others", default=True, show_default=True,
              help="Wait for runs other processes hold (taking over failed/stale ones).")
@_NO_MLFLOW
@click.pass_context
def sweep(ctx: click.Context, models: list[str], methods: list[str], seeds: list[int],
          num_samples: int, steps: int, params_path: str | None, batch_size: int | None,
          device: str, evaluate: bool, engine: str, address: str | None, seed_batch: bool,
          eval_workers: int | None, wait_for_others: bool, no_mlflow: bool) -> None:
    """A study as one job: generate, evaluate and denoise a models x methods x seeds grid.

    Every (model, method, seed) the store has is skipped; each other run is claimed in the
    store before it is done, so several sweeps (or a sweep and `bdgen generate`) on one
    store never do a run twice. Ends with the grid's state; exit status 3 when the grid
    is incomplete (failed runs, or runs still held by others with --no-wait).
    """
    from bdgen.pipeline.sweep import INCOMPLETE_EXIT
    from bdgen.pipeline.sweep import sweep as run_sweep
    from bdgen.pipeline.sweep_grid import sweep_from_params
    from bdgen.pipeline.workspace import Workspace

    grid = sweep_from_params(params_path) if params_path else {}

    def given(name: str) -> bool:  # typed on the command line (not a default)
        return ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT

    def pick(name: str, value):  # the grid's value unless the option was typed
        return grid[name] if name in grid and not given(name) else value

    if not models and "models" not in grid:
        raise click.UsageError("give --model and --method, or --params")
    if not methods and "methods" not in grid:
        raise click.UsageError("give --method (or --params)")
    ws = grid.get("workspace") or Workspace.find()
    summary = run_sweep(
        ws, models or grid["models"], methods or grid["methods"], pick("seeds", seeds),
        pick("num_samples", num_samples), pick("steps", steps),
        batch_size=batch_size, device=pick("device", device),
        evaluate=evaluate, no_mlflow=no_mlflow, engine=engine, address=address,
        seed_batch=seed_batch, eval_workers=eval_workers, wait_for_others=wait_for_others)
    for err in summary.errors:
        click.echo(f"error: {err}", err=True)
    click.echo(summary.line())
    click.echo(summary.status_line())
    if not summary.complete:
        sys.exit(INCOMPLETE_EXIT)
