"""``bdgen evaluate``: the metric suite over samples files, one result per (model, method)."""

from __future__ import annotations

import sys

import click

from bdgen.cli.options import emit_table, format_option, split_list


def run_ids_callback(ctx: click.Context, param: click.Parameter, value) -> list[int]:
    out = []
    for part in split_list(value):
        if not part.isdigit():
            raise click.BadParameter(f"{part!r} is not a run id (see `bdgen runs`)")
        out.append(int(part))
    return out


@click.command()
@click.argument("samples", nargs=-1, required=False, type=click.Path())
@click.option("--run", "run_ids", multiple=True, metavar="ID", callback=run_ids_callback,
              help="Evaluate this generation run of the store (an id from `bdgen runs`) as a "
                   "tracked run (repeatable; a comma list is accepted too).")
@click.option("--pending", is_flag=True,
              help="Evaluate, as tracked runs, every generation run not evaluated yet "
                   "(with --model-id: of that model only).")
@click.option("--model-id", default=None, help="With --pending: only this model id.")
@click.option("--replace", is_flag=True, help="With --run/--pending: redo evaluated runs.")
@click.option("--no-mlflow", is_flag=True, help="With --run/--pending: no MLflow run.")
@click.option("--dataset", "dataset_path", type=click.Path(dir_okay=False), default=None,
              help="Prepared dataset file [default: the workspace's, matched by hash].")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Write results below DIR/<model id>/ [default: next to the samples].")
@click.option("--legacy-json", is_flag=True,
              help="Write the legacy format_version 2 layout (<method>.json).")
@click.option("--denoising/--no-denoising", default=None,
              help="Denoising metrics on the validation split (need the checkpoint) "
                   "[default: when the checkpoint is found].")
@click.option("--model", "model_path", type=click.Path(dir_okay=False), default=None,
              help="Checkpoint for the denoising metrics [default: the workspace's].")
@click.option("--no-cache", is_flag=True, help="Rebuild the reference statistics.")
@format_option()
@click.option("--v2-dummy-schedule-denoising", "--legacy-v2-denoising",
              "v2_dummy_schedule_denoising", is_flag=True,
              help="Mask v2 models with the original evaluator's dummy log-linear schedule in "
                   "the denoising metrics (reproduces old numbers) instead of their learned "
                   "per-position rates.")
@click.option("--constraints", "constraints_file", type=click.Path(dir_okay=False),
              default=None,
              help="Constraint file (YAML/JSON): measure the constraint/* metrics of unguided "
                   "samples against it (guided samples use the set they carry).")
@click.option("--calibration", type=click.Path(dir_okay=False), default=None,
              help="With --constraints: calibration JSON [default: the file's "
                   "calibration_file, if any].")
def evaluate(samples: tuple[str, ...], dataset_path: str | None, out_dir: str | None,
             legacy_json: bool, denoising: bool | None, model_path: str | None,
             no_cache: bool, v2_dummy_schedule_denoising: bool, run_ids: list[int],
             pending: bool, model_id: str | None, replace: bool, no_mlflow: bool,
             fmt: str, constraints_file: str | None, calibration: str | None) -> None:
    """Evaluate SAMPLES (files, or directories searched for *.pt) against the training
    split of the dataset their model was trained on; aggregate over seeds per
    (model, method), print a summary and write one result file per (model, method)."""
    from bdgen.errors import BdgenError
    from bdgen.pipeline.constraint_sets import load_constraints
    from bdgen.pipeline.context import job_workspace
    from bdgen.pipeline.evaluate import evaluate_samples_files, summary_rows, write_result

    if calibration is not None and constraints_file is None:
        raise BdgenError("--calibration needs --constraints FILE")
    # validated before anything else is read or written
    cs = load_constraints(constraints_file, calibration) if constraints_file else None
    ws = job_workspace()
    if run_ids or pending:  # tracked: store row + MLflow run per generation run
        if ws is None:
            raise BdgenError("--run/--pending need a bdgen workspace (bdgen init)")
        from bdgen.pipeline.tracked_evaluate import pending_runs, tracked_evaluate

        ids = list(run_ids) + (pending_runs(ws, model_id) if pending else [])
        if not ids:
            click.echo("nothing to evaluate")
            return
        tracked_evaluate(ws, ids, no_mlflow=no_mlflow, replace=replace, constraints=cs)
        return
    if not samples:
        raise BdgenError("give SAMPLES files/directories, --run ID or --pending")
    if ws is None and dataset_path is None:
        raise BdgenError("not inside a bdgen workspace: pass --dataset PATH "
                         "(the prepared dataset file)")
    if ws is not None:  # files the store knows must still be what it recorded
        from bdgen.pipeline.tracked_evaluate import verify_registered_files

        verify_registered_files(ws, samples)
    errors: list[str] = []
    results = evaluate_samples_files(
        samples,
        dataset_path=dataset_path,
        data_dir=ws.data_dir if ws else None,
        cache_dir=None if (no_cache or ws is None) else ws.cache_dir,
        denoising=denoising,
        model_path=model_path,
        models_dir=(ws.root / "artifacts" / "models") if ws else None,
        errors=errors,
        v2_dummy_schedule_denoising=v2_dummy_schedule_denoising,
        progress=True,
        constraints=cs,
    )
    for err in errors:
        click.echo(f"error: {err}", err=True)
    if results:
        from bdgen.report.tables import text_table

        paths = [write_result(r, out_dir, legacy=legacy_json) for r in results]
        header, rows = summary_rows(results)
        emit_table(text_table(header, rows, "evaluation",
                              [f"wrote {p}" for p in paths] if fmt == "table" else []), fmt)
    if errors:
        sys.exit(1)
