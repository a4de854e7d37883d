"""The stages of the repository's ``dvc.yaml`` (``bdgen pipeline <stage>``).

How the repo-level DVC pipeline and the workspace's own DVC tracking coexist
(README "Pipeline"): the heavy artifacts (dataset, checkpoints, samples) live in the
workspace (``params.yaml: workspace``, default ``workspace/``, git-ignored by the repo), which
is its own git + DVC repository where bdgen ``dvc add``-s them at identity-derived paths.
The repo-level stages never name workspace paths as outputs; each writes a small JSON
*receipt* under ``results/`` (ids, paths and hashes of what it registered), and the next
stage depends on that receipt. So DVC at the top orders and caches the pipeline and
decides what is stale from ``params.yaml``, while artifacts are identified by content in
the workspace and the store.

Granularity (issue 17): one ``result`` stage per (model, method) generates and evaluates
all seeds in one process, so a study pays one start-up per result, not one per (seed, job),
and changing one method re-runs only its stages (the method's name is in the stage's name
and command). Views (issue 18): the only DVC metrics file is ``results/summary.json``
(:func:`summary_of`: the leaderboard's top result, its :data:`DVC_METRICS`, the number of
results), so ``dvc exp show`` has seven metric columns at any grid. Each result's
:data:`DVC_METRICS` (means over seeds) are in ``results/metrics/<model>/<method>.json`` and
``results/plots/headline.csv`` (one row per result), the data of ``dvc plots show/diff``.

Imports are deferred to the stage that needs them: a stage process pays only for what it
uses (torch for training and sampling, mlflow only in the stages that log to it); a result
stage whose runs are all in the store imports neither.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from bdgen.errors import BdgenError
from bdgen.pipeline.workspace import Workspace
from bdgen.util.atomic import atomic_write_json, atomic_write_text

if TYPE_CHECKING:
    from bdgen.eval.aggregate import MethodResult
    from bdgen.report.ranking import RankedRow

#: The headline metrics of a result kept as DVC metrics and plotted (a handful, so that
#: ``dvc metrics show`` / ``dvc exp show`` stay readable): the pipeline profile's priorities.
DVC_METRICS = ("validity_rate", "inside_validity", "mode_coverage_weighted", "node_tv",
               "edge_tv")


def load_params(path: str | Path = "params.yaml") -> dict:
    p = Path(path)
    if not p.is_file():
        raise BdgenError(f"params file {p} not found (run from the repository root)")
    try:
        params = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise BdgenError(f"{p} is not valid YAML: {str(exc).splitlines()[0]}") from None
    for key in ("workspace", "data", "models", "methods", "seeds", "generate"):
        if key not in params:
            raise BdgenError(f"{p}: missing key {key!r}")
    method_names(params, p)  # refuses other forms
    return params


def method_names(params: dict, where: str | Path = "params.yaml") -> list[str]:
    """The canonical names of params ``methods``: a mapping from each name to ``{}`` (the
    shipped form: DVC makes no column of an empty mapping, so ``dvc exp show`` / ``dvc
    params diff`` stay terminal-sized at any number of methods) or a list of names (one
    ``dvc exp show`` column holding the whole list). dvc.yaml's matrix takes either."""
    methods = params.get("methods")
    if isinstance(methods, dict) and all(v in ({}, None) for v in methods.values()):
        names = list(methods)
    elif isinstance(methods, list):
        names = methods
    else:
        raise BdgenError(f"{where}: methods must map each canonical method name to {{}} "
                         "(e.g. `llada_topp0.9_no_remask: {}`) or list the names; got "
                         f"{methods!r} (a key -> name mapping is the old form: the names "
                         "are the keys now)")
    if not all(isinstance(m, str) and m for m in names) or len(set(names)) != len(names):
        raise BdgenError(f"{where}: methods must be distinct method names, got {names!r}")
    return names


def _param(params: dict, *keys: str) -> Any:
    node: Any = params
    for k in keys:
        if not isinstance(node, dict) or k not in node:
            raise BdgenError(f"params.yaml: missing {'.'.join(keys)}")
        node = node[k]
    return node


def workspace_of(params: dict, params_path: str | Path = "params.yaml") -> Workspace:
    root = Path(params["workspace"])
    if not root.is_absolute():
        root = Path(params_path).resolve().parent / root
    return Workspace(root.resolve())


def read_receipt(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise BdgenError(f"receipt {p} not found (run the stage that writes it first)")
    return json.loads(p.read_text())


def write_receipt(path: str | Path, obj: dict) -> None:
    atomic_write_json(path, obj, indent=2, sort_keys=True)


def _where(params: dict) -> dict[str, int]:
    gen = _param(params, "generate")
    return {"num_samples": int(gen.get("num_samples", 100)), "steps": int(gen.get("steps", 50))}


def headline(result: MethodResult) -> dict[str, float]:
    """The DVC metrics of one result: means over its seeds, rounded for readable diffs."""
    return {k: round(result.metrics[k].mean, 6) for k in DVC_METRICS if k in result.metrics}


# --- stages ---------------------------------------------------------------------------------
def stage_prepare(params: dict, out: Path, params_path: str | Path = "params.yaml") -> dict:
    """Create the workspace if needed, prepare the dataset, DVC-track it."""
    from bdgen.pipeline.data import prepare_dataset
    from bdgen.pipeline.workspace import init_workspace
    from bdgen.tracking.artifacts import track

    ws = workspace_of(params, params_path)
    if not ws.marker.exists():  # a complete workspace needs no re-initialisation (no mlflow)
        ws = init_workspace(ws.root)
    data = _param(params, "data")
    ds, path = prepare_dataset(data.get("source", "synthetic"), mat=data.get("mat"),
                               num_graphs=data.get("num_graphs"), seed=data.get("seed", 0),
                               n_max=data.get("n_max", 8), workspace=ws)
    ref = track(ws.root, path)
    receipt = {"dataset_id": ds.dataset_id, "dataset_hash": ds.dataset_hash,
               "path": ref.path, "md5": ref.md5, "sha256": ref.sha256}
    write_receipt(out, receipt)
    return receipt


def stage_train(params: dict, model_key: str, data_receipt: Path, out: Path,
                params_path: str | Path = "params.yaml", no_mlflow: bool = False) -> dict:
    """Train ``models.<key>`` over the shared ``train`` recipe (reusing or resuming the run
    directory of the same identity)."""
    from bdgen.diffusion.trainer import TrainConfig
    from bdgen.pipeline.tracked_train import tracked_train

    ws = workspace_of(params, params_path)
    own = _param(params, "models", model_key)
    shared = params.get("train") or {}
    if not isinstance(own, dict) or not isinstance(shared, dict):
        raise BdgenError(f"params.yaml: train and models.{model_key} must be mappings")
    cfg = {**shared, **own}
    noise = cfg.pop("noise", "loglinear")
    preset = cfg.pop("preset", "small")
    device = cfg.pop("device", "cpu")
    fields = set(TrainConfig.__dataclass_fields__)
    unknown = set(cfg) - fields
    if unknown:
        raise BdgenError(f"params.yaml train / models.{model_key}: unknown keys {sorted(unknown)}; "
                         f"valid: noise, preset, device, {', '.join(sorted(fields))}")
    config = TrainConfig(**cfg)
    data = read_receipt(data_receipt)
    rec = tracked_train(ws, ws.root / data["path"], noise=noise, model=preset, config=config,
                        device=device, progress=True, no_mlflow=no_mlflow,
                        reuse=True)
    receipt = {"model_key": model_key, "model_id": rec.model_id, "checkpoint": rec.checkpoint,
               "md5": rec.md5, "sha256": rec.sha256, "mlflow_run_id": rec.mlflow_run_id,
               "dataset_id": rec.dataset_id, "step": rec.step}
    write_receipt(out, receipt)
    return receipt


def stage_result(params: dict, model_receipt: Path, method: str, out: Path,
                 metrics: Path, params_path: str | Path = "params.yaml",
                 no_mlflow: bool = False) -> dict:
    """One result: ``method`` (a canonical name; dvc.yaml passes each of params ``methods``)
    generated with every seed of params ``seeds`` and each run evaluated, in one process.
    ``out``: the receipt (one entry per seed); ``metrics``: the result's :data:`DVC_METRICS`
    (means over the seeds, as the store aggregates them).

    A result whose runs the store has done (:func:`~bdgen.pipeline.stored_runs.stored_result`)
    is read from it, without torch or mlflow: the same records, so the same files."""
    from bdgen.pipeline.store import open_store
    from bdgen.pipeline.stored_runs import stored_result

    ws = workspace_of(params, params_path)
    seeds = [int(s) for s in _param(params, "seeds")]
    gen = _param(params, "generate")
    model = read_receipt(model_receipt)
    where = _where(params)
    checkpoint = ws.root / model["checkpoint"]
    done = stored_result(ws, checkpoint, method, seeds, where["num_samples"], where["steps"],
                         no_mlflow=no_mlflow)
    if done is not None:  # every run in the store (dvc repro -f, after a sweep): no torch
        runs, evals = done
    else:
        # Work to do: the jobs import torch (sampling, evaluation) and, for it, mlflow.
        from bdgen.pipeline.tracked_evaluate import tracked_evaluate
        from bdgen.pipeline.tracked_generate import tracked_generate

        runs = tracked_generate(ws, checkpoint, [method], seeds, where["num_samples"],
                                where["steps"], batch_size=gen.get("batch_size"),
                                device=gen.get("device", "cpu"), no_mlflow=no_mlflow)
        evals = tracked_evaluate(ws, [r.generation_run_id for r in runs],
                                 no_mlflow=no_mlflow)
    name = runs[0].method
    with open_store(workspace=ws) as store:
        found = [r for r in store.method_results(model=runs[0].model_id,
                                                 where={**where, "seed": seeds})
                 if r.method == name]
    if not found:
        raise BdgenError(f"{runs[0].model_id}/{name}: the store has no result over seeds "
                         f"{seeds} after evaluating them")
    receipt = {"model_key": model.get("model_key", Path(model_receipt).stem),
               "model_id": runs[0].model_id, "method": name,
               **where,
               "runs": [{"seed": g.seed, "generation_run_id": g.generation_run_id,
                         "evaluation_run_id": e.evaluation_run_id, "path": g.path,
                         "md5": g.md5, "sha256": g.sha256}
                        for g, e in zip(runs, evals)]}
    write_receipt(out, receipt)
    write_receipt(metrics, headline(found[0]))
    return receipt


def stage_leaderboard(params: dict, receipts: Sequence[Path], out_md: Path, plots: Path,
                      params_path: str | Path = "params.yaml",
                      summary: Path | None = None) -> str:
    """Rank this pipeline's models (those of the given model receipts): writes the markdown
    table, the plot data (one row per result) and ``summary`` (the DVC metrics:
    :func:`summary_of`), returns the terminal table."""
    from bdgen.pipeline.store import open_store
    from bdgen.report.profiles import load_profile
    from bdgen.report.ranking import AUTO_PROFILE, rank_by
    from bdgen.report.tables import leaderboard_table, render

    ws = workspace_of(params, params_path)
    if not ws.marker.exists():
        raise BdgenError(f"no workspace at {ws.root} (run the prepare stage first)")
    docs = [(Path(r).stem, read_receipt(r)) for r in receipts]
    keys = {doc["model_id"]: doc.get("model_key", stem) for stem, doc in docs}
    wanted = {m for name in method_names(params) for m in (name, f"v2_{name}")}
    name = str((params.get("leaderboard") or {}).get("profile", AUTO_PROFILE))
    beside = Path(params_path).resolve().parent / name
    profile = (AUTO_PROFILE if name == AUTO_PROFILE
               else load_profile(str(beside) if beside.is_file() else name))
    with open_store(workspace=ws) as store:
        results = [r for mid in keys for r in store.method_results(model=mid,
                                                                   where=_where(params))
                   if r.method in wanted]  # only this pipeline's methods and sizes
    ranking = rank_by(results, profile)
    table = leaderboard_table(ranking, None, None, None)
    atomic_write_text(out_md, render(table, "markdown", False))
    atomic_write_text(plots, plot_rows(results, keys))
    if summary is not None:
        atomic_write_json(summary, summary_of(ranking.rows or ranking.unconstrained, results,
                                              keys), indent=2)  # key order kept: dvc columns
    return render(table, "table", False)


def summary_of(rows: Sequence[RankedRow], results: Sequence[MethodResult],
               keys: dict[str, str]) -> dict:
    """The pipeline's DVC metrics, in this order: ``top``, the leaderboard's first result
    (``<model key>/<method>``), its :data:`DVC_METRICS`, and ``results``, how many results the
    leaderboard ranked (models x methods once the grid is complete). Seven keys whatever the
    grid, so that ``dvc exp show`` / ``dvc metrics show`` stay terminal-sized (per-model
    tops would not: two method names and ten metric columns are wider than 200 characters);
    every result's values are in the plots and the leaderboard."""
    out: dict = {}
    if rows:
        best = rows[0].result
        out = {"top": f"{keys[best.model]}/{best.method}", **headline(best)}
    return {**out, "results": len(results)}


def plot_rows(results: Sequence[MethodResult], keys: dict[str, str]) -> str:
    """CSV of the headline metrics, one row per result (``result`` = model key/method), in
    a stable order: the data of dvc.yaml's ``plots``."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["result", "model", "method", *DVC_METRICS])
    for r in sorted(results, key=lambda r: (keys[r.model], r.method)):
        h = headline(r)
        w.writerow([f"{keys[r.model]}/{r.method}", keys[r.model], r.method,
                    *(h.get(k, "") for k in DVC_METRICS)])
    return buf.getvalue()

