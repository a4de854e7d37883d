"""``bdgen pipeline <stage>`` (the commands ``dvc.yaml`` runs) and ``bdgen sweep``."""

from __future__ import annotations

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
@click.argument("method_key")
@click.argument("seed", type=int)
@click.option("--model", "model_receipt", required=True,
              type=click.Path(dir_okay=False, path_type=Path))
@_PARAMS
@_OUT
@_NO_MLFLOW
def generate(method_key: str, seed: int, model_receipt: Path, params_path: str, out: Path,
             no_mlflow: bool) -> None:
    """Generate params `methods.METHOD_KEY` with SEED from a trained model's receipt."""
    from bdgen.pipeline.stages import load_params, stage_generate

    stage_generate(load_params(params_path), model_receipt, method_key, seed, out, params_path,
                   no_mlflow)


@pipeline.command()
@click.option("--samples", "samples_receipt", required=True,
              type=click.Path(dir_okay=False, path_type=Path))
@_PARAMS
@_OUT
@_NO_MLFLOW
def evaluate(samples_receipt: Path, params_path: str, out: Path, no_mlflow: bool) -> None:
    """Evaluate one generation run; headline metrics to --out (a DVC metrics file)."""
    from bdgen.pipeline.stages import load_params, stage_evaluate

    stage_evaluate(load_params(params_path), samples_receipt, out, params_path, no_mlflow)


@pipeline.command()
@click.option("--models-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory of the train receipts (<model key>.json).")
@_PARAMS
@click.option("--markdown", "out_md", required=True,
              type=click.Path(dir_okay=False, path_type=Path))
@click.option("--summary", required=True, type=click.Path(dir_okay=False, path_type=Path))
def leaderboard(models_dir: Path, params_path: str, out_md: Path, summary: Path) -> None:
    """Rank the methods of the models in params `models` and print the leaderboard."""
    from bdgen.pipeline.stages import load_params, stage_leaderboard

    params = load_params(params_path)
    receipts = [models_dir / f"{key}.json" for key in params["models"]]
    click.echo(stage_leaderboard(params, receipts, out_md, summary, params_path))


@click.command()
@click.option("--model", "--models", "models", required=True, multiple=True,
              callback=lambda c, p, v: split_list(v, paths=True),
              help="Checkpoint file (e.g. artifacts/models/<run>/checkpoint_final.pt) or "
                   "model id from the store (e.g. v1-loglinear-3fa9c0d2e1). Repeatable; a "
                   "comma list is accepted too.")
@click.option("--method", "--methods", "methods", required=True, multiple=True,
              callback=list_callback, help="Method name (repeatable; comma list accepted).")
@seeds_option()
@click.option("--num-samples", type=int, default=1000, show_default=True)
@click.option("--steps", type=int, default=100, show_default=True)
@click.option("--batch-size", type=int, default=None)
@device_option("Sampling device (one process per GPU: --device cuda:K).")
@click.option("--evaluate/--no-evaluate", default=True, show_default=True,
              help="Evaluate each run this process generated.")
@_NO_MLFLOW
def sweep(models: list[str], methods: list[str], seeds: list[int], num_samples: int,
          steps: int, batch_size: int | None, device: str, evaluate: bool,
          no_mlflow: bool) -> None:
    """Generate (and evaluate) a models x methods x seeds grid outside DVC.

    Runs the store already has are skipped. Safe to start as N parallel processes (e.g. one
    per GPU with --device cuda:K): each run is claimed atomically in the store, and a
    process that loses the claim skips it.
    """
    from bdgen.pipeline.sweep import sweep as run_sweep
    from bdgen.pipeline.workspace import Workspace

    summary = run_sweep(Workspace.find(), models, methods, seeds, num_samples, steps,
                        batch_size=batch_size, device=device, evaluate=evaluate,
                        no_mlflow=no_mlflow)
    click.echo(summary.line())
