"""``bdgen generate``: sample a trained model with one or more methods and seeds."""

from __future__ import annotations

import click

from bdgen.cli.options import device_option, list_callback, seeds_option


@click.command()
@click.option("--model", "model_path", required=True, type=click.Path(dir_okay=False),
              help="Checkpoint file, or in a workspace a model id from the store (e.g. "
                   "v1-loglinear-3fa9c0d2e1); its version and noise schedule are used.")
@click.option("--method", "methods", required=True, multiple=True, callback=list_callback,
              help="Method name, e.g. llada_topp0.9_remdm_confidence_tsw1.0 (repeatable).")
@seeds_option()
@click.option("--num-samples", type=int, default=1000, show_default=True,
              help="Samples per seed.")
@click.option("--steps", type=int, default=100, show_default=True, help="Sampling steps N.")
@click.option("--batch-size", type=int, default=None,
              help="Generation batch [default: all samples of a seed at once].")
@device_option("Sampling device.")
@click.option("--out-dir", type=click.Path(file_okay=False), default=None,
              help="Write below DIR/<model_id>/<method>/ instead of the workspace layout "
                   "(outside the workspace: untracked).")
@click.option("--constraints", "constraints", type=click.Path(dir_okay=False), default=None,
              help="Constraint file (YAML or JSON) of the guided methods (names with "
                   "_guided_...); required for them, refused for unguided ones.")
@click.option("--calibration", type=click.Path(dir_okay=False), default=None,
              help="Calibration JSON (bdgen constraints calibrate) [default: the constraint "
                   "file's calibration_file, if any; else every p90 = 1].")
@click.option("--no-mlflow", is_flag=True,
              help="Do not log to MLflow (recorded on the store rows).")
@click.option("--force", is_flag=True,
              help="Redo runs the store already has (default: skip them).")
def generate(model_path: str, methods: list[str], seeds: list[int], num_samples: int,
             steps: int, batch_size: int | None, device: str, out_dir: str | None,
             constraints: str | None, calibration: str | None, no_mlflow: bool,
             force: bool) -> None:
    """Write one self-describing samples file per (model, method, seed).

    In a workspace each (method, seed) is one tracked run: an MLflow run, a generation row
    in the store and a DVC-tracked samples file. With --out-dir outside the workspace files
    are only written.

    Guided methods (constraint-guided SVDD sampling, docs/GUIDANCE.md) take the constraint
    set with --constraints FILE; the samples file then carries the set (with its
    calibration and identity) and the per-step guidance diagnostics.
    """
    from bdgen.pipeline.context import job_workspace
    from bdgen.pipeline.generate import generate as run_generate

    ws = job_workspace(out_dir, required=out_dir is None)
    if ws is not None:
        from bdgen.pipeline.tracked_generate import tracked_generate

        tracked_generate(ws, model_path, list(methods), seeds, num_samples, steps,
                         batch_size=batch_size, device=device, no_mlflow=no_mlflow,
                         force=force, out_dir=out_dir, constraints=constraints,
                         calibration=calibration)
        return
    run_generate(model_path, list(methods), seeds, num_samples=num_samples,
                 steps=steps, batch_size=batch_size, device=device, out_dir=out_dir,
                 constraints=constraints, calibration=calibration)
