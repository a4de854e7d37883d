"""Materialise a dataset source into a prepared dataset file (``bdgen data prepare``).

Kept apart from the CLI so the pipeline and tracking layers can call it directly.
"""

from __future__ import annotations

from pathlib import Path

from bdgen.data.dataset import PreparedDataset, prepare_graph2plan, prepare_synthetic
from bdgen.errors import BdgenError
from bdgen.pipeline.workspace import Workspace

SOURCES = ("synthetic", "graph2plan")


def _workspace_or_none() -> Workspace | None:
    try:
        return Workspace.find()
    except BdgenError:
        return None


def graph2plan_cache_dir(ws: Workspace | None = None) -> Path | None:
    """Where parsed ``data.mat`` files are cached: the workspace cache, if in a workspace."""
    ws = ws or _workspace_or_none()
    return ws.cache_dir / "graph2plan" if ws is not None else None


def build_dataset(source: str = "synthetic", *, mat: str | Path | None = None,
                  num_graphs: int | None = None, seed: int = 0, n_max: int = 8,
                  cache_dir: str | Path | None = None) -> PreparedDataset:
    """The prepared dataset of a source, in memory (nothing written except the .mat cache)."""
    if source not in SOURCES:
        raise BdgenError(f"unknown dataset source {source!r}; valid: {', '.join(SOURCES)}")
    if source == "graph2plan":
        if mat is None:
            raise BdgenError("--source graph2plan needs --mat PATH (Graph2Plan's data.mat)")
        return prepare_graph2plan(mat, n_max=n_max, cache_dir=cache_dir)
    if mat is not None:
        raise BdgenError("--mat is only used with --source graph2plan")
    return prepare_synthetic(num_graphs, seed=seed, n_max=n_max)


def prepare_dataset(source: str = "synthetic", *, mat: str | Path | None = None,
                    num_graphs: int | None = None, seed: int = 0, n_max: int = 8,
                    out: str | Path | None = None,
                    workspace: Workspace | None = None) -> tuple[PreparedDataset, Path]:
    """Build and save a dataset; returns it and the path written.

    The file goes to ``out`` if given, else to the workspace's ``data/<dataset_id>.pt``
    (a workspace is then required). The Graph2Plan parse is cached in the workspace's
    cache directory when there is a workspace.
    """
    ws = workspace or _workspace_or_none()
    if out is None and ws is None:
        Workspace.find()  # raises the standard "not inside a bdgen workspace" error
    cache_dir = graph2plan_cache_dir(ws) if ws is not None else None
    ds = build_dataset(source, mat=mat, num_graphs=num_graphs, seed=seed, n_max=n_max,
                       cache_dir=cache_dir)
    if out is not None:
        path = Path(out)
    else:
        assert ws is not None  # (checked above)
        path = ws.dataset_path(ds.dataset_id)
    ds.save(path)
    return ds, path


__all__ = ["SOURCES", "build_dataset", "graph2plan_cache_dir", "prepare_dataset"]
