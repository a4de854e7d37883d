"""A tiny study set-up shared by the sweep/engine tests: a workspace with a synthetic
dataset and two tiny trained models (the checkpoints copied into more workspaces); and a
tiny one-model pipeline folder for the stage tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from bdgen.data.samples_file import load_samples
from bdgen.diffusion.trainer import TrainConfig
from bdgen.pipeline.data import prepare_dataset
from bdgen.pipeline.tracked_train import tracked_train
from bdgen.pipeline.workspace import Workspace, init_workspace
from bdgen.tracking import Tracker

METHODS = ["random_argmax_no_remask", "llada_topp0.9_remdm_confidence_tsw1.0"]

TINY_PIPELINE = {
    "workspace": "workspace",
    "data": {"source": "synthetic", "num_graphs": 200, "seed": 0},
    "train": {"preset": "tiny", "steps": 10, "batch_size": 16, "warmup_steps": 2,
              "val_every": 10, "log_every": 10, "checkpoint_every": 1000},
    "models": {"v1": {"noise": "loglinear"}},
    "methods": {"llada_topp0.9_no_remask": {}},
    "seeds": [1, 2],
    "generate": {"num_samples": 24, "steps": 8, "device": "cpu"},
}
"""params.yaml of a one-model pipeline at test sizes."""
SEEDS = [3, 4]
N, STEPS = 24, 8


def trained_models(root: Path, seeds: tuple[int, ...] = (1, 2)) -> list[Path]:
    """Tiny models trained once (one per training seed; two by default) in a workspace
    below ``root``."""
    ws = init_workspace(root / "trainws")
    _, data = prepare_dataset("synthetic", num_graphs=200, seed=0, workspace=ws)
    paths = []
    for seed in seeds:
        cfg = TrainConfig(steps=10, batch_size=16, warmup_steps=2, checkpoint_every=1000,
                          val_every=10, log_every=10, seed=seed)
        rec = tracked_train(ws, data, model="tiny", config=cfg, device="cpu", progress=False,
                            no_mlflow=True)
        paths.append(ws.root / rec.checkpoint)
    return paths


def study_workspace(root: Path, checkpoints: list[Path]) -> tuple[Workspace, list[str]]:
    """A fresh workspace with the dataset and copies of the checkpoints (same model ids)."""
    ws = init_workspace(root)
    prepare_dataset("synthetic", num_graphs=200, seed=0, workspace=ws)
    models = []
    for i, ck in enumerate(checkpoints):
        dst = ws.root / "artifacts" / "models" / f"given-{i}" / ck.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ck, dst)
        models.append(str(dst))
    return ws, models


def tokens_of(ws: Workspace, rel: str) -> torch.Tensor:
    return load_samples(ws.root / rel).tokens


def mlflow_runs(ws, kind: str) -> list:
    tracker = Tracker.for_workspace(ws.root)
    client = tracker._client
    exps = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps, f"tags.`bdgen.kind` = '{kind}'", max_results=1000)


def trained_pipeline(repo: Path, params: dict = TINY_PIPELINE) -> None:
    """What `dvc repro train` leaves in ``repo`` (params.yaml, results/data.json,
    results/models/v1.json, the workspace with its model), made in this process."""
    import yaml

    from bdgen.pipeline.stages import load_params, stage_prepare, stage_train

    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    loaded = load_params(repo / "params.yaml")
    stage_prepare(loaded, repo / "results" / "data.json", repo / "params.yaml")
    for key in loaded["models"]:
        stage_train(loaded, key, repo / "results" / "data.json",
                    repo / "results" / "models" / f"{key}.json", repo / "params.yaml",
                    no_mlflow=True)
