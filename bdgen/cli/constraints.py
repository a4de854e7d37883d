"""``bdgen constraints check FILE`` and ``bdgen constraints calibrate``: constraint sets for
guided sampling (docs/GUIDANCE.md)."""

from __future__ import annotations

import json

import click


def _table(cs, cf=None, fmt: str = "table") -> str:
    from bdgen.cli.options import terminal_width
    from bdgen.report.tables import render, text_table

    rows = [[str(i + 1), c.name, c.kind, c.describe(), f"{c.weight:g}", f"{p:g}"]
            for i, (c, p) in enumerate(zip(cs.constraints, cs.normalisers))]
    notes = []
    if cf is not None:
        notes.append(f"file defaults (legacy keys, not part of the identity): "
                     f"K {cf.num_candidates}, alpha {cf.alpha:g}, phi {cf.phi}, "
                     f"reward {cf.reward_mode}")
    notes.append(f"calibrated: {'yes' if cs.calibrated else 'no (every p90 = 1)'}")
    notes.append(f"identity: {cs.identity}")
    table = text_table(["#", "name", "type", "meaning", "weight", "p90"], rows)
    if fmt != "table":
        return render(table, fmt)
    return render(table, width=terminal_width()) + "\n".join(notes) + "\n"


@click.group()
def constraints() -> None:
    """Constraint sets for guided sampling: validate a file, calibrate its normalisers."""


@constraints.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--calibration", type=click.Path(dir_okay=False), default=None,
              help="Calibration JSON to apply [default: the file's calibration_file, if any].")
@click.option("--format", "fmt", type=click.Choice(["table", "markdown", "csv", "json"]),
              default="table", show_default=True,
              help="Output format (json: the compiled set with its identity).")
def check(file: str, calibration: str | None, fmt: str) -> None:
    """Validate FILE (YAML or JSON) and print the compiled constraint set and its identity."""
    from bdgen.guidance.calibration import load_calibration
    from bdgen.guidance.schema import calibration_path, load_constraint_file

    cf = load_constraint_file(file)
    cs = cf.compile()
    calib = calibration or calibration_path(cf, file)
    if calib is not None:
        cs = load_calibration(calib, cs)
    if fmt == "json":
        click.echo(json.dumps({**cs.to_dict(), "identity": cs.identity}, indent=2))
        return
    if fmt == "table":
        click.echo(f"{file}: {len(cs)} constraint(s), valid")
    click.echo(_table(cs, cf, fmt), nl=False)


@constraints.command("calibrate")
@click.option("--model", "model_id", required=True, help="Model id in the workspace's store.")
@click.option("--constraints", "constraints_file", required=True,
              type=click.Path(dir_okay=False), help="Constraint file (YAML or JSON).")
@click.option("--method", default=None,
              help="Unguided method whose samples calibrate [default: "
                   "llada_topp0.9_no_remask].")
@click.option("--out", default=None, type=click.Path(dir_okay=False),
              help="Calibration file [default: artifacts/calibration/<model>/<method>/"
                   "<set id>.json in the workspace].")
def calibrate(model_id: str, constraints_file: str, method: str | None, out: str | None) -> None:
    """P90 normalisers of a constraint set from the unguided samples the store holds for
    MODEL and METHOD (every succeeded seed); writes a DVC-tracked calibration file and
    prints the calibrated set's identity."""
    from bdgen.pipeline.calibrate import DEFAULT_CALIBRATION_METHOD, calibrate_constraints
    from bdgen.pipeline.workspace import Workspace

    res = calibrate_constraints(Workspace.find(), model_id, constraints_file,
                                method or DEFAULT_CALIBRATION_METHOD, out)
    seeds = ", ".join(str(r["seed"]) for r in res.runs)
    click.echo(f"{res.num_graphs} graph(s) from {len(res.runs)} run(s) (seeds {seeds}); "
               f"{res.skipped} undecodable skipped")
    click.echo(_table(res.constraint_set), nl=False)
    tracked = f" (DVC: {res.artifact.path}.dvc)" if res.artifact is not None and \
        (res.path.parent / (res.path.name + ".dvc")).exists() else ""
    click.echo(f"wrote {res.path}{tracked}")
