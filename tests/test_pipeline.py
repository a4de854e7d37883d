"""End to end on a tiny config: init -> prepare -> train -> generate -> evaluate, and the store,
MLflow and DVC agree. Plus: hash mismatch refused, unreachable MLflow fails before any store
row, a SIGKILLed generate leaves nothing half-registered, parallel sweeps never duplicate."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from bdgen.cli.main import cli
from bdgen.diffusion.trainer import TrainConfig
from bdgen.errors import BdgenError
from bdgen.pipeline.data import prepare_dataset
from bdgen.pipeline.sweep import sweep
from bdgen.pipeline.tracked_evaluate import tracked_evaluate
from bdgen.pipeline.tracked_generate import tracked_generate
from bdgen.pipeline.tracked_train import tracked_train
from bdgen.pipeline.workspace import Workspace, init_workspace
from bdgen.tracking import Tracker, dvc_file, experiment_name
from bdgen.tracking.mlflow_server import free_port, server_command, wait_for_server
from bdgen.tracking.mlflow_tracker import default_tracking_uri
from bdgen.util.hashing import file_digests

METHODS = ["random_argmax_no_remask", "llada_topp0.9_no_remask"]
SEEDS = [1, 2]
N, STEPS = 50, 20
TINY = TrainConfig(steps=30, batch_size=32, warmup_steps=5, checkpoint_every=1000,
                   val_every=10, log_every=10)
REPO = Path(__file__).resolve().parents[1]


def _rows(ws: Workspace, sql: str) -> list[tuple]:
    with sqlite3.connect(ws.db_path) as conn:
        return conn.execute(sql).fetchall()


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    ws = init_workspace(tmp_path_factory.mktemp("e2e") / "ws")
    ds, data = prepare_dataset("synthetic", num_graphs=300, seed=0, workspace=ws)
    model = tracked_train(ws, data, model="tiny", config=TINY, device="cpu", progress=False)
    gens = tracked_generate(ws, ws.root / model.checkpoint, METHODS, SEEDS, N, STEPS,
                            device="cpu", renders=2)
    evals = tracked_evaluate(ws, [g.generation_run_id for g in gens])
    return ws, ds, model, gens, evals


def test_store_mlflow_and_dvc_agree(e2e):
    ws, ds, model, gens, evals = e2e
    tracker = Tracker.for_workspace(ws.root)
    exp = experiment_name(ds.dataset_id)
    # store: one model, 4 generation runs, 4 evaluation runs, all linked to MLflow runs
    assert _rows(ws, "select model_id, checkpoint_sha256, mlflow_run_id from models") == [
        (model.model_id, model.sha256, model.mlflow_run_id)]
    gen_rows = _rows(ws, "select id, status, samples_path, samples_sha256, mlflow_run_id, "
                         "no_mlflow from generation_runs order by id")
    assert [(r[0], r[1], r[2], r[3], r[4], r[5]) for r in gen_rows] == [
        (g.generation_run_id, "succeeded", g.path, g.sha256, g.mlflow_run_id, 0) for g in gens]
    ev_rows = _rows(ws, "select id, generation_run_pk, mlflow_run_id from evaluation_runs "
                        "order by id")
    assert ev_rows == [(e.evaluation_run_id, e.generation_run_id, e.mlflow_run_id)
                       for e in evals]
    # MLflow: 1 train + 4 generate + 4 evaluate runs, tagged with the store ids and hashes
    for kind, n in (("train", 1), ("generate", 4), ("evaluate", 4), ("denoising", 1)):
        assert len(tracker.find_runs(exp, {"bdgen.kind": kind})) == n
    # denoising: computed once for the model (seeded), stored at model level and in MLflow
    [den_run] = tracker.find_runs(exp, {"bdgen.kind": "denoising"})
    den = _rows(ws, "select d.mlflow_run_id, count(v.value) from denoising_evaluations d "
                    "join denoising_values v on v.denoising_evaluation_pk = d.id group by d.id")
    assert den == [(den_run, 20)]
    assert len(tracker.get_run(den_run).data.metrics) == 20
    for g in gens:
        run = tracker.get_run(g.mlflow_run_id)
        assert run.info.status == "FINISHED"
        assert run.data.tags["bdgen.generation_run_id"] == str(g.generation_run_id)
        assert run.data.tags["bdgen.artifact.samples.sha256"] == g.sha256
        assert run.data.tags["bdgen.artifact.samples.md5"] == g.md5
        assert run.data.params["seed"] == str(g.seed)
        assert run.data.metrics["gen/samples_per_s"] > 0
    for e in evals:
        run = tracker.get_run(e.mlflow_run_id)
        assert run.data.tags["bdgen.evaluation_run_id"] == str(e.evaluation_run_id)
        assert run.data.metrics["validity_rate"] == pytest.approx(e.metrics["validity_rate"])
    train = tracker.get_run(model.mlflow_run_id)
    assert train.data.tags["bdgen.model_id"] == model.model_id
    assert train.data.tags["bdgen.artifact.checkpoint.sha256"] == model.sha256
    history = tracker._client.get_metric_history(model.mlflow_run_id, "curve/val_loss")
    assert [m.step for m in history] == [10, 20, 30]
    losses = tracker._client.get_metric_history(model.mlflow_run_id, "curve/train_loss")
    assert [m.step for m in losses] == [10, 20, 30]
    assert all(m.value == m.value and m.value > 0 for m in losses)
    # DVC: every registered file has a .dvc file whose md5 is the file's and the recorded one
    for path, md5, sha in [(g.path, g.md5, g.sha256) for g in gens] + [
            (model.checkpoint, model.md5, model.sha256)]:
        meta = yaml.safe_load(dvc_file(ws.root / path).read_text())
        assert meta["outs"][0]["md5"] == md5
        assert file_digests(ws.root / path) == (md5, sha)


def test_rerun_skips_what_the_store_has(e2e):
    ws, _, model, gens, _ = e2e
    again = tracked_generate(ws, ws.root / model.checkpoint, METHODS, SEEDS, N, STEPS,
                             device="cpu")
    assert all(r.skipped for r in again)
    assert [r.sha256 for r in again] == [g.sha256 for g in gens]
    evs = tracked_evaluate(ws, [g.generation_run_id for g in gens])
    assert all(e.skipped and e.metrics for e in evs)
    assert _rows(ws, "select count(*) from evaluation_runs") == [(4,)]


def test_evaluate_refuses_a_samples_file_that_changed(e2e, tmp_path):
    ws, _, model, gens, _ = e2e
    g = gens[0]
    path = ws.root / g.path
    original = path.read_bytes()
    try:
        other = ws.root / gens[1].path
        path.write_bytes(other.read_bytes())  # a valid samples file, but not this run's
        with pytest.raises(BdgenError, match="does not match the store"):
            tracked_evaluate(ws, [g.generation_run_id], replace=True)
        res = CliRunner().invoke(cli, ["evaluate", str(path), "--dataset",
                                       str(next(ws.data_dir.glob("*.pt")))],
                                 env={"BDGEN_WORKSPACE": str(ws.root)})
        assert res.exit_code == 2 and "does not match the store" in res.output
    finally:
        path.write_bytes(original)
    assert file_digests(path)[1] == g.sha256


def test_unreachable_mlflow_fails_before_any_store_row(e2e, monkeypatch):
    ws, _, model, _, _ = e2e
    before = _rows(ws, "select count(*) from generation_runs")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    start = time.monotonic()
    with pytest.raises(BdgenError, match="unreachable.*--no-mlflow"):
        tracked_generate(ws, ws.root / model.checkpoint, METHODS, [99], N, STEPS,
                         device="cpu")
    assert time.monotonic() - start < 30
    assert _rows(ws, "select count(*) from generation_runs") == before


def test_no_mlflow_is_recorded_on_the_row(e2e):
    ws, _, model, _, _ = e2e
    (rec,) = tracked_generate(ws, ws.root / model.checkpoint, METHODS[:1], [7], N, STEPS,
                              device="cpu", no_mlflow=True)
    assert rec.mlflow_run_id is None
    assert _rows(ws, f"select no_mlflow, mlflow_run_id, status from generation_runs where "
                     f"id = {rec.generation_run_id}") == [(1, None, "succeeded")]


def test_generate_and_sweep_take_a_model_id(e2e):
    """A model id from the store names its recorded checkpoint; near misses get a
    suggestion, a changed or missing checkpoint a one-line error."""
    ws, _, model, gens, _ = e2e
    env = {"BDGEN_WORKSPACE": str(ws.root)}
    (rec,) = tracked_generate(ws, model.model_id, METHODS[:1], SEEDS[:1], N, STEPS,
                              device="cpu")
    assert rec.skipped and rec.generation_run_id == gens[0].generation_run_id
    res = CliRunner().invoke(cli, ["sweep", "--models", model.model_id, "--methods",
                                   METHODS[0], "--seeds", str(SEEDS[0]), "--num-samples",
                                   str(N), "--steps", str(STEPS), "--device", "cpu"], env=env)
    assert res.exit_code == 0 and "0 run(s) done here, 1 already in the store" in res.output
    near = model.model_id[:-1] + ("0" if model.model_id[-1] != "0" else "1")
    res = CliRunner().invoke(cli, ["generate", "--model", near, "--method", METHODS[0],
                                   "--seeds", "1"], env=env)
    assert res.exit_code == 2 and f"did you mean {model.model_id}?" in res.output
    ckpt = ws.root / model.checkpoint
    original = ckpt.read_bytes()
    try:
        ckpt.unlink()
        with pytest.raises(BdgenError, match="is missing"):
            tracked_generate(ws, model.model_id, METHODS[:1], [97531], N, STEPS, device="cpu")
        ckpt.write_bytes(original + b"\0")  # not the recorded file any more
        with pytest.raises(BdgenError, match="has changed since the store recorded it"):
            tracked_generate(ws, model.model_id, METHODS[:1], [97531], N, STEPS, device="cpu")
    finally:
        ckpt.write_bytes(original)
    assert _rows(ws, "select count(*) from generation_runs where seed = 97531") == [(0,)]


def _bdgen(*args: str, ws: Workspace) -> subprocess.Popen:
    env = {**os.environ, "BDGEN_WORKSPACE": str(ws.root), "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", "from bdgen.cli.main import cli; cli()", *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


@pytest.mark.slow
def test_killed_generate_leaves_nothing_half_registered_and_reruns(e2e):
    ws, _, model, _, _ = e2e
    args = ["generate", "--model", str(ws.root / model.checkpoint), "--method", METHODS[1],
            "--seeds", "5", "--num-samples", "400", "--steps", "30", "--device", "cpu"]
    sql = "select status, samples_path, samples_sha256 from generation_runs where seed = 5"
    proc = _bdgen(*args, ws=ws)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not _rows(ws, sql):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # the row is claimed: the run is under way
    proc.wait()
    assert _rows(ws, sql) == [("running", None, None)]  # nothing registered
    target = ws.samples_path(model.model_id, METHODS[1], 5, 400, 30)
    assert not dvc_file(target).exists()
    # the rerun of the same identity takes the row over and completes it
    res = CliRunner().invoke(cli, args, env={"BDGEN_WORKSPACE": str(ws.root)})
    assert res.exit_code == 0, res.output
    ((status, path, sha),) = _rows(ws, sql)
    assert status == "succeeded" and path == target.relative_to(ws.root).as_posix()
    assert file_digests(target)[1] == sha
    meta = yaml.safe_load(dvc_file(target).read_text())
    assert meta["outs"][0]["md5"] == file_digests(target)[0]


@pytest.mark.slow
def test_parallel_sweeps_never_do_a_run_twice(e2e):
    ws, _, model, _, _ = e2e
    seeds = (11, 12)
    cells = len(seeds) * len(METHODS)
    procs = [_bdgen("sweep", "--models", str(ws.root / model.checkpoint), "--methods",
                    ",".join(METHODS), "--seeds", ",".join(map(str, seeds)), "--num-samples",
                    "20", "--steps", "5", "--device", "cpu", ws=ws) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    rows = _rows(ws, "select g.seed, g.status from generation_runs g where g.seed in "
                     f"{seeds}")
    assert sorted(rows) == sorted((s, "succeeded") for s in seeds for _ in METHODS)
    done_here = sum(int(o.rsplit("sweep: ", 1)[1].split()[0]) for o in outs)
    assert done_here == cells  # each of the runs done by exactly one process
    tracker = Tracker.for_workspace(ws.root)
    runs = [r for s in seeds for r in tracker.find_runs(
        experiment_name(model.dataset_id), {"bdgen.kind": "generate", "bdgen.seed": str(s)})]
    assert len(runs) == cells
    assert _rows(ws, "select count(*) from evaluation_runs e join generation_runs g on "
                     f"e.generation_run_pk = g.id where g.seed in {seeds}") == [(cells,)]


@pytest.mark.slow
def test_generate_runs_are_visible_through_the_mlflow_server_rest_api(e2e):
    ws, ds, _, gens, _ = e2e
    port = free_port()
    proc = subprocess.Popen(server_command(default_tracking_uri(ws.root), port,
                                           ws.root / "mlartifacts"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_server(url, proc, timeout=120)
        with urllib.request.urlopen(f"{url}/api/2.0/mlflow/runs/get?run_id="
                                    f"{gens[0].mlflow_run_id}") as r:
            run = json.load(r)["run"]
        tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
        assert tags["bdgen.generation_run_id"] == str(gens[0].generation_run_id)
        assert tags["bdgen.artifact.samples.sha256"] == gens[0].sha256
        body = json.dumps({"experiment_ids": [run["info"]["experiment_id"]],
                           "filter": "tags.`bdgen.kind` = 'generate'",
                           "max_results": 100}).encode()
        req = urllib.request.Request(f"{url}/api/2.0/mlflow/runs/search", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req) as r:
            found = {x["info"]["run_id"] for x in json.load(r)["runs"]}
        assert {g.mlflow_run_id for g in gens} <= found
        Tracker(url)  # a reachable server passes the reachability check
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_sweep_job_summarises_what_it_did(e2e):
    """The sweep job (library form of ``bdgen sweep``): what the store had is skipped and
    reported, nothing is generated or evaluated twice."""
    ws, _, model, gens, _ = e2e
    summary = sweep(ws, [model.model_id], METHODS, SEEDS, N, STEPS, device="cpu")
    assert not summary.generated and not summary.evaluated
    assert sorted(summary.skipped) == sorted(g.generation_run_id for g in gens)
    assert summary.line() == f"sweep: 0 run(s) done here, {len(gens)} already in the store"
    assert summary.complete and summary.done == len(gens)
    assert summary.status_line().startswith(f"grid complete: {len(gens)}/{len(gens)} runs")
