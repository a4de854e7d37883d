"""The stages of the repository's ``dvc.yaml`` (``bdgen pipeline <stage>``).

How the repo-level DVC pipeline and the workspace's own DVC tracking coexist
(README "Pipeline"): the heavy artifacts (dataset, checkpoints, samples) live in the
workspace (``params.yaml: workspace``, default ``workspace/``, git-ignored by the repo), which
is its own git + DVC repository where bdgen ``dvc add``-s them at identity-derived paths.
The repo-level stages never name workspace paths as outputs; each writes a small JSON
*receipt* under ``results/`` (ids, paths and hashes of what it registered), and the next
stage depends on that receipt. So DVC at the top orders and caches the pipeline and
decides what is stale from ``params.yaml``, while artifacts are identified by content in
the workspace and the store. Per-evaluation headline metrics (``results/metrics/*.json``)
and ``results/summary.json`` are DVC metrics, shown by ``dvc exp show``/``dvc metrics show``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from bdgen.diffusion.trainer import TrainConfig
from bdgen.errors import BdgenError
from bdgen.pipeline.data import prepare_dataset
from bdgen.pipeline.store import open_store
from bdgen.pipeline.tracked_evaluate import HEADLINE_METRICS, tracked_evaluate
from bdgen.pipeline.tracked_generate import tracked_generate
from bdgen.pipeline.tracked_train import tracked_train
from bdgen.pipeline.workspace import Workspace, init_workspace
from bdgen.report.profiles import load_profile
from bdgen.report.ranking import AUTO_PROFILE, rank_by
from bdgen.report.tables import leaderboard_table, render
from bdgen.tracking import track
from bdgen.util.atomic import atomic_write_json, atomic_write_text


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
    return params


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


# --- stages ---------------------------------------------------------------------------------
def stage_prepare(params: dict, out: Path, params_path: str | Path = "params.yaml") -> dict:
    """Create the workspace if needed, prepare the dataset, DVC-track it."""
    ws = init_workspace(workspace_of(params, params_path).root)
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
    """Train ``models.<key>`` (reusing or resuming the run directory of the same identity)."""
    ws = workspace_of(params, params_path)
    cfg = dict(_param(params, "models", model_key))
    noise = cfg.pop("noise", "loglinear")
    preset = cfg.pop("preset", "small")
    device = cfg.pop("device", "cpu")
    fields = set(TrainConfig.__dataclass_fields__)
    unknown = set(cfg) - fields
    if unknown:
        raise BdgenError(f"params.yaml models.{model_key}: unknown keys {sorted(unknown)}; "
                         f"valid: noise, preset, device, {', '.join(sorted(fields))}")
    config = TrainConfig(**cfg)
    data = read_receipt(data_receipt)
    rec = tracked_train(ws, ws.root / data["path"], noise=noise, model=preset, config=config,
                        device=device, progress=False, no_mlflow=no_mlflow,
                        reuse=True)
    receipt = {"model_key": model_key, "model_id": rec.model_id, "checkpoint": rec.checkpoint,
               "md5": rec.md5, "sha256": rec.sha256, "mlflow_run_id": rec.mlflow_run_id,
               "dataset_id": rec.dataset_id, "step": rec.step}
    write_receipt(out, receipt)
    return receipt


def stage_generate(params: dict, model_receipt: Path, method_key: str, seed: int, out: Path,
                   params_path: str | Path = "params.yaml", no_mlflow: bool = False) -> dict:
    """Generate ``methods.<key>`` with one seed from a trained model's receipt."""
    ws = workspace_of(params, params_path)
    method = _param(params, "methods", method_key)
    gen = _param(params, "generate")
    model = read_receipt(model_receipt)
    (rec,) = tracked_generate(ws, ws.root / model["checkpoint"], [method], [int(seed)],
                              int(gen.get("num_samples", 100)), int(gen.get("steps", 50)),
                              batch_size=gen.get("batch_size"), device=gen.get("device", "cpu"),
                              no_mlflow=no_mlflow)
    receipt = {"model_id": rec.model_id, "method": rec.method, "seed": rec.seed,
               "num_samples": rec.num_samples, "steps": rec.steps,
               "generation_run_id": rec.generation_run_id, "mlflow_run_id": rec.mlflow_run_id,
               "path": rec.path, "md5": rec.md5, "sha256": rec.sha256}
    write_receipt(out, receipt)
    return receipt


def stage_evaluate(params: dict, samples_receipt: Path, out: Path,
                   params_path: str | Path = "params.yaml", no_mlflow: bool = False) -> dict:
    """Evaluate the generation run of a samples receipt; headline metrics to ``out``."""
    ws = workspace_of(params, params_path)
    gen = read_receipt(samples_receipt)
    (rec,) = tracked_evaluate(ws, [gen["generation_run_id"]], no_mlflow=no_mlflow,
                              metrics_out={gen["generation_run_id"]: Path(out)})
    return rec.metrics


def stage_leaderboard(params: dict, receipts: Sequence[Path], out_md: Path, summary: Path,
                      params_path: str | Path = "params.yaml") -> str:
    """Rank this pipeline's models (those of the given model receipts): writes the markdown
    table and the summary metrics, returns the terminal table."""

    ws = workspace_of(params, params_path)
    keys = {read_receipt(r)["model_id"]: read_receipt(r).get("model_key", Path(r).stem)
            for r in receipts}
    gen = _param(params, "generate")
    wanted = {m for name in _param(params, "methods").values() for m in (name, f"v2_{name}")}
    where = {"num_samples": int(gen.get("num_samples", 100)), "steps": int(gen.get("steps", 50))}
    name = str((params.get("leaderboard") or {}).get("profile", AUTO_PROFILE))
    beside = Path(params_path).resolve().parent / name
    profile = (AUTO_PROFILE if name == AUTO_PROFILE
               else load_profile(str(beside) if beside.is_file() else name))
    store = open_store(workspace=ws)
    try:
        results = [r for mid in keys for r in store.method_results(model=mid, where=where)
                   if r.method in wanted]  # only this pipeline's methods and sizes
    finally:
        store.close()
    table = leaderboard_table(rank_by(results, profile), None, None, None)
    md = render(table, "markdown", False)
    atomic_write_text(out_md, md)
    write_receipt(summary, {
        f"{keys[r.model]}/{r.method}": {
            k: round(r.metrics[k].mean, 6) for k in HEADLINE_METRICS if k in r.metrics}
        for r in results})
    return render(table, "table", False)
