"""The MLflow shape of tracked jobs on a tiny real pipeline (real MLflow SQLite store, DVC,
torch): live training curves seen from another client while training runs, training
artifacts and dataset inputs, one parent per result with the store's aggregates and the
seed runs nested, and no RUNNING run left behind by a job killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from mlflow import MlflowClient

from bdgen.diffusion.trainer import TrainConfig
from bdgen.pipeline.data import prepare_dataset
from bdgen.pipeline.tracked_evaluate import tracked_evaluate
from bdgen.pipeline.tracked_generate import tracked_generate
from bdgen.pipeline.tracked_train import tracked_train
from bdgen.pipeline.workspace import init_workspace
from bdgen.store.api import Store
from bdgen.tracking import Tracker, experiment_name

METHODS = ["random_argmax_no_remask", "llada_topp0.9_no_remask"]
SEEDS = [1, 2]
N, STEPS = 40, 10
TINY = TrainConfig(steps=40, batch_size=32, warmup_steps=5, checkpoint_every=1000,
                   val_every=10, log_every=5)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    ws = init_workspace(tmp_path_factory.mktemp("runs") / "ws")
    ds, data = prepare_dataset("synthetic", num_graphs=200, seed=0, workspace=ws)
    other = MlflowClient(tracking_uri=Tracker.for_workspace(ws.root).uri)  # another client
    exp = experiment_name(ds.dataset_id)
    seen: list[tuple[int, int, str]] = []  # (step, points visible elsewhere, run status)

    def hook(row: dict) -> None:
        if "train_loss" not in row:
            return
        (run,) = other.search_runs([other.get_experiment_by_name(exp).experiment_id],
                                   "tags.`bdgen.kind` = 'train'")
        history = other.get_metric_history(run.info.run_id, "curve/train_loss")
        seen.append((row["step"], len(history), run.info.status))

    model = tracked_train(ws, data, model="tiny", config=TINY, device="cpu", progress=False,
                          live_every_s=0.0, on_metrics=hook)
    gens = tracked_generate(ws, ws.root / model.checkpoint, METHODS, SEEDS, N, STEPS,
                            device="cpu", renders=0)
    evals = tracked_evaluate(ws, [g.generation_run_id for g in gens], plots=False)
    return ws, ds, model, gens, evals, seen


def _client(ws) -> MlflowClient:
    return MlflowClient(tracking_uri=Tracker.for_workspace(ws.root).uri)


def test_training_curve_is_visible_to_another_client_while_training_runs(pipe):
    ws, _, model, _, _, seen = pipe
    # every training-loss row was already in MLflow, seen by another client, while RUNNING
    assert [s for s, _, _ in seen] == list(range(5, TINY.steps + 1, 5))
    assert all(status == "RUNNING" for _, _, status in seen)
    assert [n for _, n, _ in seen] == list(range(1, len(seen) + 1))
    history = _client(ws).get_metric_history(model.mlflow_run_id, "curve/train_loss")
    assert [m.step for m in history] == list(range(5, TINY.steps + 1, 5))
    stamps = [m.timestamp for m in history]
    assert stamps == sorted(stamps) and stamps[-1] > stamps[0]  # stamped when measured
    val = _client(ws).get_metric_history(model.mlflow_run_id, "curve/val_loss")
    assert [m.step for m in val] == [10, 20, 30, 40]


def test_training_run_has_name_artifacts_dataset_and_source(pipe):
    ws, ds, model, _, _, _ = pipe
    client = _client(ws)
    run = client.get_run(model.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.runName"] == "train loglinear-tiny"
    assert run.data.tags["bdgen.identity"] == "train:loglinear-tiny"
    for tag in ("mlflow.user", "mlflow.source.name", "mlflow.source.git.commit"):
        assert run.data.tags[tag], tag
    (inp,) = run.inputs.dataset_inputs
    assert (inp.dataset.name, inp.dataset.digest) == ("synthetic", ds.dataset_id)
    assert "data/" in inp.dataset.source
    arts = {f.path for d in ("plots", "config", "checkpoint")
            for f in client.list_artifacts(model.mlflow_run_id, d)}
    assert arts == {"plots/loss_curve.png", "config/train_config.json",
                    "checkpoint/checkpoint_final.pt.dvc"}
    local = Path(client.download_artifacts(model.mlflow_run_id,
                                           "checkpoint/checkpoint_final.pt.dvc"))
    assert model.md5 in local.read_text()  # the pointer dvc pull needs


def test_one_parent_per_result_with_the_stores_aggregates(pipe):
    ws, ds, model, gens, evals, _ = pipe
    client = _client(ws)
    exp = client.get_experiment_by_name(experiment_name(ds.dataset_id)).experiment_id
    runs = client.search_runs([exp], max_results=1000)
    parents = {r.data.tags["bdgen.method"]: r for r in runs
               if r.data.tags["bdgen.kind"] == "result"}
    assert sorted(parents) == sorted(METHODS)
    by_id = {r.info.run_id: r for r in runs}
    for g in gens:
        assert by_id[g.mlflow_run_id].data.tags["mlflow.parentRunId"] == \
            parents[g.method].info.run_id
        assert by_id[g.mlflow_run_id].data.tags["mlflow.runName"] == f"gen {g.method}/{g.seed}"
    for e in evals:
        child = by_id[e.mlflow_run_id]
        assert child.data.tags["mlflow.parentRunId"] == parents[e.method].info.run_id
        assert child.data.tags["mlflow.runName"] == f"{e.method}/{e.seed}"
        assert child.inputs.dataset_inputs[0].dataset.digest == ds.dataset_id
    with Store.open(f"sqlite:///{ws.db_path}") as store:
        results = {r.method: r for r in store.summary_results(model=model.model_id)}
    for method, parent in parents.items():
        assert parent.info.status == "FINISHED"
        assert parent.data.tags["mlflow.runName"] == method
        assert parent.data.metrics["n"] == len(SEEDS)
        for name, agg in results[method].metrics.items():
            assert parent.data.metrics[name] == agg.mean, name
            assert parent.data.metrics[f"{name}_std"] == agg.std, name
        # updated when each seed landed: n went 1 -> 2 (logged at step n)
        hist = client.get_metric_history(parent.info.run_id, "n")
        assert sorted((m.step, m.value) for m in hist) == [(1, 1.0), (2, 2.0)]


def _bdgen(ws, *args: str, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI",
                                                              "BDGEN_DB_URL", "BDGEN_FAULT")}
    env.update({"BDGEN_WORKSPACE": str(ws.root), "PYTHONPATH": str(REPO)})
    if fault:
        env["BDGEN_FAULT"] = fault
    return subprocess.run([sys.executable, "-c", "from bdgen.cli.main import cli; cli()",
                           *args], env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_killed_generate_leaves_no_running_run_after_a_rerun(pipe):
    ws, ds, model, _, _, _ = pipe
    args = ["generate", "--model", str(ws.root / model.checkpoint), "--method", METHODS[0],
            "--seeds", "7", "--num-samples", str(N), "--steps", str(STEPS), "--device", "cpu"]
    killed = _bdgen(ws, *args, fault="generate.run-open:1")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    client = _client(ws)
    exp = client.get_experiment_by_name(experiment_name(ds.dataset_id)).experiment_id
    zombies = client.search_runs([exp], "attributes.status = 'RUNNING'")
    assert len(zombies) == 1  # what a kill -9 leaves
    time.sleep(0.01)
    rerun = _bdgen(ws, *args)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    statuses = Counter(r.info.status for r in client.search_runs([exp], max_results=1000))
    assert statuses["RUNNING"] == 0
    dead = client.get_run(zombies[0].info.run_id)
    assert dead.info.status == "KILLED" and "died" in dead.data.tags["bdgen.killed"]
    seed7 = client.search_runs([exp], "tags.`bdgen.seed` = '7' and "
                                      "tags.`bdgen.kind` = 'generate'")
    assert sorted(r.info.status for r in seed7) == ["FINISHED", "KILLED"]


@pytest.mark.slow
def test_killed_training_is_reaped_and_the_resumed_run_prints_progress(pipe):
    ws, ds, _, _, _, _ = pipe
    out = ws.root / "artifacts" / "models" / "killed-train"
    args = ["train", "--dataset", str(ws.dataset_path(ds.dataset_id)), "--model", "tiny",
            "--steps", "40", "--batch-size", "32", "--val-every", "10", "--log-every", "5",
            "--checkpoint-every", "10", "--seed", "3", "--out", str(out), "--device", "cpu"]
    # the 5th row is step 20's loss, before step 20's checkpoint: the last one is step 10's,
    # so MLflow has the curve up to step 10 whatever the flush timer did, and --resume
    # continues from step 10
    killed = _bdgen(ws, *args, fault="train.log-row:5")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    client = _client(ws)
    exp = client.get_experiment_by_name(experiment_name(ds.dataset_id)).experiment_id
    (zombie,) = client.search_runs([exp], "attributes.status = 'RUNNING'")
    assert zombie.data.tags["bdgen.kind"] == "train"
    assert [m.step for m in client.get_metric_history(zombie.info.run_id,
                                                      "curve/train_loss")][:2] == [5, 10]
    resumed = _bdgen(ws, *args, "--resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    # no TTY here: the heartbeat's plain progress line, no tqdm bar
    assert "train: step 40/40 (100%)" in resumed.stderr, resumed.stderr
    assert "\r" not in resumed.stderr
    assert client.get_run(zombie.info.run_id).info.status == "KILLED"
    runs = client.search_runs([exp], "tags.`bdgen.kind` = 'train' and "
                                     "attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"])
    history = client.get_metric_history(runs[0].info.run_id, "curve/train_loss")
    # the curve up to the step-10 checkpoint, then live from step 15 on: once per step
    assert sorted(m.step for m in history) == list(range(5, 41, 5))
    assert not client.search_runs([exp], "attributes.status = 'RUNNING'")


def test_the_curve_reaches_mlflow_at_each_checkpoint_whatever_the_flush_timer(tmp_path):
    """A run killed outright keeps in MLflow the curve up to its last checkpoint (where a
    resume continues), even when the bounded-rate flush has not fired: here it never does
    (``live_every_s`` of an hour), and at each row another client looks at what a kill at
    that row would leave."""
    ws = init_workspace(tmp_path / "ws")
    ds, data = prepare_dataset("synthetic", num_graphs=120, seed=0, workspace=ws)
    other = MlflowClient(tracking_uri=Tracker.for_workspace(ws.root).uri)
    exp = experiment_name(ds.dataset_id)
    seen: dict[int, list[int]] = {}

    def look(row: dict) -> None:
        if "train_loss" not in row:
            return
        (run,) = other.search_runs([other.get_experiment_by_name(exp).experiment_id],
                                   "tags.`bdgen.kind` = 'train'")
        seen[row["step"]] = [m.step for m in other.get_metric_history(run.info.run_id,
                                                                      "curve/train_loss")]

    config = TrainConfig(steps=30, batch_size=16, warmup_steps=2, checkpoint_every=10,
                         val_every=10, log_every=5)
    model = tracked_train(ws, data, model="tiny", config=config, device="cpu",
                          progress=False, live_every_s=3600.0, on_metrics=look)
    # steps 5 and 10 only buffered; from step 15 on, the step-10 checkpoint's flush sent
    # them; from step 25 on, the step-20 checkpoint's as well
    assert seen == {5: [], 10: [], 15: [5, 10], 20: [5, 10], 25: [5, 10, 15, 20],
                    30: [5, 10, 15, 20]}, seen
    history = other.get_metric_history(model.mlflow_run_id, "curve/train_loss")
    assert [m.step for m in history] == [5, 10, 15, 20, 25, 30]  # the rest at the end
