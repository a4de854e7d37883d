"""``bdgen sweep`` as a study (local engine): every cell generated, evaluated and denoised
exactly once in the store and in MLflow; seed batches give each seed's own samples; the
exit status and summary say whether the grid is complete."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _study_support import (
    METHODS,
    SEEDS,
    STEPS,
    N,
    mlflow_runs,
    study_workspace,
    tokens_of,
    trained_models,
)

from bdgen.errors import BdgenError
from bdgen.pipeline.generate import generate
from bdgen.pipeline.store import open_store
from bdgen.pipeline.sweep import INCOMPLETE_EXIT, sweep
from bdgen.pipeline.units import EvalUnit, WorkerEnv, run_unit

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return trained_models(tmp_path_factory.mktemp("models"))


def _count(ws, sql: str) -> int:
    with sqlite3.connect(ws.db_path) as c:
        return c.execute(sql).fetchone()[0]


def test_local_study_does_every_cell_once_with_seed_batches(checkpoints, tmp_path):
    ws, models = study_workspace(tmp_path / "ws", checkpoints)
    lines: list[str] = []
    s = sweep(ws, models, METHODS, SEEDS, N, STEPS, device="cpu", seed_batch=True,
              eval_workers=1, renders=0, echo=lines.append, progress_every=0.0)
    cells = len(models) * len(METHODS) * len(SEEDS)
    assert s.complete, (s.status_line(), s.errors)
    assert len(s.generated) == cells and sorted(s.evaluated) == sorted(s.generated)
    assert len(s.denoised) == len(models)
    assert s.status_line().startswith(f"grid complete: {cells}/{cells} runs done")
    assert any(line.startswith("sweep: ") and "ETA" in line for line in lines)
    assert _count(ws, "select count(*) from generation_runs where status='succeeded'") == cells
    assert _count(ws, "select count(*) from evaluation_runs where status='succeeded'") == cells
    assert _count(ws, "select count(*) from denoising_evaluations") == len(models)
    for kind, n in (("generate", cells), ("evaluate", cells), ("denoising", len(models))):
        runs = mlflow_runs(ws, kind)
        assert len(runs) == n, kind
        assert {r.info.status for r in runs} == {"FINISHED"}
    # each seed of a batch equals the seed sampled alone (plain `bdgen generate` path)
    with open_store(workspace=ws) as store:
        infos = [store.generation_run(g) for g in s.generated]
    for model in models:
        alone = generate(model, METHODS, SEEDS, N, STEPS, device="cpu",
                         out_dir=tmp_path / "alone", progress=False)
        for r in alone:
            (info,) = [i for i in infos if (i.model_id, i.method, i.seed) ==
                       (r.model_id, r.method, r.seed)]
            assert torch.equal(tokens_of(ws, info.samples_path), _tokens(r.path))
            assert info.samples_sha256 == r.sha256  # byte-identical samples files
    # a second sweep finds the grid complete and does nothing
    again = sweep(ws, models, METHODS, SEEDS, N, STEPS, device="cpu", eval_workers=0,
                  echo=lines.append)
    assert again.complete and not again.generated and len(again.skipped) == cells


def _tokens(path: Path) -> torch.Tensor:
    from bdgen.data.samples_file import load_samples

    return load_samples(path).tokens


def test_sweep_exit_status_says_the_grid_is_incomplete(checkpoints, tmp_path):
    """A cell another process holds: with --no-wait the sweep does the rest, says which is
    open and exits 3; the held cell is never done twice."""
    ws, models = study_workspace(tmp_path / "ws", checkpoints[:1])
    from bdgen.model.checkpoint import load_checkpoint, model_id
    from bdgen.pipeline.checkpoints import register_checkpoint
    from bdgen.util.hashing import file_sha256

    ckpt, sha = load_checkpoint(models[0]), file_sha256(models[0])
    mid = model_id(ckpt, sha)
    with open_store(workspace=ws) as store:
        register_checkpoint(store, ckpt, models[0], sha, mid)
        held = store.claim_generation_run(mid, METHODS[0], SEEDS[0], N, STEPS)
    assert held.won  # held by this (live) test process
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "PYTHONPATH": str(REPO),
           "BDGEN_WORKSPACE": str(ws.root), "MLFLOW_DISABLE_TELEMETRY": "true",
           "DVC_NO_ANALYTICS": "1", "HOME": str(tmp_path),
           "BDGEN_CLAIM_TTL_S": "3600"}  # the test's claim stays live without heartbeats
    res = subprocess.run([sys.executable, "-c", "from bdgen.cli.main import cli; cli()",
                          "sweep", "--models", models[0], "--methods", ",".join(METHODS),
                          "--seeds", ",".join(map(str, SEEDS)), "--num-samples", str(N),
                          "--steps", str(STEPS), "--device", "cpu", "--no-wait",
                          "--eval-workers", "0", "--no-mlflow"],
                         env=env, capture_output=True, text=True, timeout=600)
    out = res.stdout + res.stderr
    assert res.returncode == INCOMPLETE_EXIT, out
    assert "Traceback" not in out
    assert "grid INCOMPLETE: 3/4 runs done" in out and "1 running elsewhere" in out
    assert "sweep: 3 run(s) done here" in out
    assert _count(ws, "select count(*) from generation_runs where status='running'") == 1


def test_worker_that_does_not_see_the_workspace_refuses(tmp_path):
    """The shared-filesystem check: a worker without the sweep's token file refuses."""
    from bdgen.pipeline.workspace import init_workspace

    ws = init_workspace(tmp_path / "ws", dvc=False, mlflow=False)
    with pytest.raises(BdgenError, match="does not see the sweep's workspace"):
        run_unit(EvalUnit(1), WorkerEnv(str(ws.root), True, "no-such-token"))


def test_grid_from_params_yaml(tmp_path):
    """`bdgen sweep --params`: the DVC pipeline's grid (models from its train receipts)."""
    import json

    import yaml

    from bdgen.pipeline.sweep_grid import sweep_from_params

    params = {"workspace": "ws", "data": {}, "models": {"a": {}, "b": {}},
              "methods": ["random_argmax_no_remask", "llada_topp0.9_no_remask"],
              "seeds": [7, 8], "generate": {"num_samples": 30, "steps": 9, "device": "cpu"}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(BdgenError, match="model 'a' of .* has no receipt"):
        sweep_from_params(tmp_path / "params.yaml")
    (tmp_path / "results" / "models").mkdir(parents=True)
    for k in "ab":
        (tmp_path / "results" / "models" / f"{k}.json").write_text(
            json.dumps({"model_id": f"v1-loglinear-{k * 10}"}))
    grid = sweep_from_params(tmp_path / "params.yaml")
    assert grid["models"] == ["v1-loglinear-aaaaaaaaaa", "v1-loglinear-bbbbbbbbbb"]
    assert grid["methods"] == ["random_argmax_no_remask", "llada_topp0.9_no_remask"]
    assert (grid["seeds"], grid["num_samples"], grid["steps"], grid["device"]) == (
        [7, 8], 30, 9, "cpu")
    assert grid["workspace"].root == (tmp_path / "ws").resolve()


def test_sweep_cli_takes_the_grid_from_params_and_typed_options_win(tmp_path, monkeypatch):
    """`bdgen sweep --params`: the grid's models are used; a typed `--model` replaces them."""
    import json

    import yaml
    from click.testing import CliRunner

    from bdgen.cli.main import cli
    from bdgen.pipeline.workspace import init_workspace

    params = {"workspace": "ws", "data": {}, "models": {"a": {}},
              "methods": ["random_argmax_no_remask"], "seeds": [7],
              "generate": {"num_samples": 30, "steps": 9, "device": "cpu"}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "results" / "models").mkdir(parents=True)
    (tmp_path / "results" / "models" / "a.json").write_text(
        json.dumps({"model_id": "v1-loglinear-aaaaaaaaaa"}))
    init_workspace(tmp_path / "ws", dvc=False, mlflow=False)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    res = runner.invoke(cli, ["sweep", "--params", "params.yaml", "--no-mlflow"])
    assert res.exit_code == 2 and "'v1-loglinear-aaaaaaaaaa' is neither" in res.output
    res = runner.invoke(cli, ["sweep", "--params", "params.yaml", "--model", "nothere.pt",
                              "--no-mlflow"])
    assert res.exit_code == 2 and "checkpoint nothere.pt does not exist" in res.output
    res = runner.invoke(cli, ["sweep", "--no-mlflow"])
    assert res.exit_code == 2 and "give --model and --method, or --params" in res.output
