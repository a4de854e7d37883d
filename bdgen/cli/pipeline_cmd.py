"""``bdgen pipeline <stage>`` (the commands ``dvc.yaml`` runs) and ``bdgen sweep``."""

from __future__ import annotations

from pathlib import Path

import click

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
@click.argument("method_key")
@click.option("--model", "model_receipt", required=True,
              type=click.Path(dir_okay=False, path_type=Path))
@_PARAMS
@_OUT
@click.option("--metrics", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="DVC metrics file: the result's headline metrics (means over seeds).")
@_NO_MLFLOW
def result(method_key: str, model_receipt: Path, params_path: str, out: Path, metrics: Path,
           no_mlflow: bool) -> None:
    """Generate params `methods.METHOD_KEY` with every seed of params `seeds` from a trained
    model's receipt, and evaluate each run (one process for the whole result)."""
    from bdgen.pipeline.stages import load_params, stage_result

    r = stage_result(load_params(params_path), model_receipt, method_key, out, metrics,
                     params_path, no_mlflow)
    click.echo(f"{r['model_id']}/{r['method']}: {len(r['runs'])} seed(s) -> {metrics}")


@pipeline.command()
@click.option("--models-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory of the train receipts (<model key>.json).")
@_PARAMS
@click.option("--markdown", "out_md", required=True,
              type=click.Path(dir_okay=False, path_type=Path))
@click.option("--plots", "plots", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="CSV of the headline metrics, one row per result (dvc plots).")
def leaderboard(models_dir: Path, params_path: str, out_md: Path, plots: Path) -> None:
    """Rank the methods of the models in params `models` and print the leaderboard."""
    from bdgen.pipeline.stages import load_params, stage_leaderboard

    params = load_params(params_path)
    receipts = [models_dir / f"{key}.json" for key in params["models"]]
    click.echo(stage_leaderboard(params, receipts, out_md, plots, params_path))


def _csv(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


@click.command()
@click.option("--models", required=True,
              help="Comma-separated checkpoint files "
                   "(e.g. artifacts/models/<run>/checkpoint_final.pt) or model ids from the "
                   "store (e.g. v1-loglinear-3fa9c0d2e1).")
@click.option("--methods", required=True, help="Comma-separated method names.")
@click.option("--seeds", default="42,123,456,789,1337", show_default=True)
@click.option("--num-samples", type=int, default=1000, show_default=True)
@click.option("--steps", type=int, default=100, show_default=True)
@click.option("--batch-size", type=int, default=None)
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N].")
@click.option("--evaluate/--no-evaluate", default=True, show_default=True,
              help="Evaluate each run this process generated.")
@_NO_MLFLOW
def sweep(models: str, methods: str, seeds: str, num_samples: int, steps: int,
          batch_size: int | None, device: str, evaluate: bool, no_mlflow: bool) -> None:
    """Generate (and evaluate) a models x methods x seeds grid outside DVC.

    Runs the store already has are skipped. Safe to start as N parallel processes (e.g. one
    per GPU with --device cuda:K): each run is claimed atomically in the store, and a
    process that loses the claim skips it.
    """
    from bdgen.pipeline.generate import parse_seeds
    from bdgen.pipeline.sweep import sweep as run_sweep
    from bdgen.pipeline.workspace import Workspace

    summary = run_sweep(Workspace.find(), _csv(models), _csv(methods), parse_seeds(seeds),
                        num_samples, steps, batch_size=batch_size, device=device,
                        evaluate=evaluate, no_mlflow=no_mlflow)
    click.echo(summary.line())
