"""``bdgen data``: prepare a dataset file, print dataset statistics against RPLAN."""

from __future__ import annotations

import json
import time

import click


@click.group()
def data() -> None:
    """Prepare datasets and inspect their statistics."""


_SOURCE = click.option("--source", type=click.Choice(["synthetic", "graph2plan"]),
                       default="synthetic", show_default=True, help="Where graphs come from.")
_MAT = click.option("--mat", type=click.Path(dir_okay=False),
                    help="Graph2Plan's data.mat (with --source graph2plan).")
_NUM = click.option("--num-graphs", type=int, default=None,
                    help="Synthetic graphs to generate [default: 25000].")
_SEED = click.option("--seed", type=int, default=0, show_default=True,
                     help="Synthetic generator seed.")
_NMAX = click.option("--n-max", type=int, default=8, show_default=True,
                     help="Largest room count kept.")


@data.command()
@_SOURCE
@_MAT
@_NUM
@_SEED
@_NMAX
@click.option("--out", type=click.Path(dir_okay=False),
              help="Output file [default: <workspace>/data/<dataset_id>.pt].")
def prepare(source: str, mat: str | None, num_graphs: int | None, seed: int, n_max: int,
            out: str | None) -> None:
    """Materialise a source into a versioned, content-hashed dataset file."""
    from bdgen.pipeline.data import prepare_dataset

    start = time.perf_counter()
    ds, path = prepare_dataset(source, mat=mat, num_graphs=num_graphs, seed=seed, n_max=n_max,
                               out=out)
    click.echo(f"dataset_id: {ds.dataset_id}")
    click.echo(f"hash:       {ds.dataset_hash}")
    click.echo(f"graphs:     {len(ds)} (n_max {ds.vocab.n_max})")
    click.echo(f"path:       {path}")
    click.echo(f"time:       {time.perf_counter() - start:.1f} s")


@data.command()
@_SOURCE
@_MAT
@_NUM
@_SEED
@_NMAX
@click.option("--dataset", "dataset_path", type=click.Path(dir_okay=False),
              help="A prepared dataset file (overrides --source).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="Output format (the statistics are nested: no CSV).")
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
def stats(source: str, mat: str | None, num_graphs: int | None, seed: int, n_max: int,
          dataset_path: str | None, fmt: str, as_json: bool) -> None:
    """Dataset statistics beside the RPLAN reference, with the TV per distribution."""
    from bdgen.data.dataset import PreparedDataset
    from bdgen.data.stats import dataset_statistics, format_statistics, tv_to_reference
    from bdgen.pipeline.data import build_dataset, graph2plan_cache_dir

    if dataset_path is not None:
        ds = PreparedDataset.load(dataset_path)
    else:
        ds = build_dataset(source, mat=mat, num_graphs=num_graphs, seed=seed, n_max=n_max,
                           cache_dir=graph2plan_cache_dir() if mat else None)
    result = dataset_statistics(ds.graphs(), n_max=ds.vocab.n_max)
    if as_json or fmt == "json":
        result["tv"] = tv_to_reference(result)
        result["dataset_id"] = ds.dataset_id
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"dataset {ds.dataset_id} ({ds.source}, {len(ds)} graphs)")
    click.echo(format_statistics(result))
