"""``bdgen sweep --engine ray`` on a REAL local Ray (2 CPUs, started by the sweep): a worker
killed mid-unit (SIGKILL from the BDGEN_FAULT hook) is retried by Ray and the grid still
completes, every run exactly once in the store and in MLflow, with the same samples as the
one-process sweep."""

from __future__ import annotations

import os
import sqlite3

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

from bdgen.pipeline.store import open_store
from bdgen.pipeline.sweep import sweep
from bdgen.util.faults import ENV_FAULT, ENV_FAULT_ONCE

ray = pytest.importorskip("ray")


def _by_cell(ws, ids):
    with open_store(workspace=ws) as store:
        infos = [store.generation_run(g) for g in ids]
    return {(i.model_id, i.method, i.seed): (i.samples_path, i.samples_sha256) for i in infos}


@pytest.mark.slow
def test_ray_sweep_survives_a_killed_worker_and_matches_the_local_sweep(tmp_path):
    # one model: its two methods are two units for Ray's two CPUs (one worker is killed)
    ckpts = trained_models(tmp_path / "models", seeds=(1,))
    local_ws, models = study_workspace(tmp_path / "local", ckpts)
    local = sweep(local_ws, models, METHODS, SEEDS, N, STEPS, device="cpu", eval_workers=0,
                  renders=0, echo=lambda s: None)
    assert local.complete

    ws, models = study_workspace(tmp_path / "ray", ckpts)
    once = tmp_path / "fault-fired"
    os.environ[ENV_FAULT], os.environ[ENV_FAULT_ONCE] = "sample_unit.between_seeds:1", str(once)
    try:
        s = sweep(ws, models, METHODS, SEEDS, N, STEPS, device="cpu", engine="ray",
                  num_cpus=2, renders=0, echo=lambda s: None)
    finally:
        os.environ.pop(ENV_FAULT), os.environ.pop(ENV_FAULT_ONCE)
    assert once.exists(), (s.status_line(), s.errors)  # a worker was killed mid-unit
    assert s.complete, (s.status_line(), s.errors)
    cells = len(models) * len(METHODS) * len(SEEDS)
    assert len(s.generated) == cells and not s.errors
    with sqlite3.connect(ws.db_path) as c:
        rows = c.execute("select status, count(*) from generation_runs "
                         "group by status").fetchall()
        evals = c.execute("select count(*) from evaluation_runs where status='succeeded'"
                          ).fetchone()[0]
        den = c.execute("select count(*) from denoising_evaluations").fetchone()[0]
    assert rows == [("succeeded", cells)] and evals == cells and den == len(models)
    gen_runs = mlflow_runs(ws, "generate")
    assert len(gen_runs) == cells  # the killed attempt had not opened the next run
    assert len({r.data.tags["bdgen.generation_run_id"] for r in gen_runs}) == cells
    assert len(mlflow_runs(ws, "evaluate")) == cells
    # same samples as the one-process sweep, cell by cell
    a, b = _by_cell(local_ws, local.generated), _by_cell(ws, s.generated)
    assert a.keys() == b.keys()
    for cell in a:
        assert torch.equal(tokens_of(local_ws, a[cell][0]), tokens_of(ws, b[cell][0])), cell
        assert a[cell][1] == b[cell][1], cell  # same sha256: byte-identical files
