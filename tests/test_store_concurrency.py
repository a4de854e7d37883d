"""Concurrent writers (spawned processes) and a writer killed mid-transaction, per backend."""
# ruff: noqa: F811  (pytest fixtures imported from _store_support are redefined as arguments)

from __future__ import annotations

import multiprocessing as mp
import os
import signal

import pytest
from _store_support import (  # noqa: F401  (fixtures)
    METHOD,
    MODEL,
    make_generation_run,
    sample_metrics,
    store_url,
    worker_half_write,
    worker_open_and_generate,
    worker_record,
)
from sqlalchemy import func, select

from bdgen.eval.registry import METRICS
from bdgen.store import migrate
from bdgen.store.api import Store
from bdgen.store.models import EvaluationRun, GenerationRun, MetricDefinition, MetricValue
from bdgen.util.provenance import code_version

PROCESSES = 4  # 4 writers on a 2-core machine: their transactions interleave for real
RUNS_EACH = 100  # (they all start writing together: worker_record's barrier)
TIMEOUT_S = 300


def _collect(procs, queue) -> list[tuple[str, object]]:
    results = [queue.get(timeout=TIMEOUT_S) for _ in procs]
    for p in procs:
        p.join(TIMEOUT_S)
        assert p.exitcode == 0
    return results


def _bulk_generation_runs(store: Store, n: int) -> list[int]:
    """n succeeded generation runs (seeds 0..n-1), inserted in one statement."""
    model_pk = store.get_or_create_model(MODEL, "v1", "loglinear")
    method_pk = store.get_or_create_method(METHOD)
    with store.session() as s:
        series = store._series(s, model_pk, method_pk, 100, 10).id
        rows = [{"series_pk": series, "seed": i, "status": "succeeded", "no_mlflow": True,
                 "provenance": "bdgen", "code_version": code_version()} for i in range(n)]
        s.execute(GenerationRun.__table__.insert(), rows)
        return list(s.scalars(select(GenerationRun.id).order_by(GenerationRun.seed)))


@pytest.mark.slow
def test_concurrent_processes_record_their_evaluations_exactly_once(store_url):
    store = Store.open(store_url)
    gids = _bulk_generation_runs(store, PROCESSES * RUNS_EACH)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    start = ctx.Barrier(PROCESSES)
    procs = [ctx.Process(target=worker_record,
                         args=(store_url, gids[i * RUNS_EACH:(i + 1) * RUNS_EACH], queue,
                               start))
             for i in range(PROCESSES)]
    for p in procs:
        p.start()
    results = _collect(procs, queue)
    assert results == [("ok", RUNS_EACH)] * PROCESSES, results
    with store.read_session() as s:
        per_gen = dict(s.execute(select(EvaluationRun.generation_run_pk, func.count())
                                 .group_by(EvaluationRun.generation_run_pk)).all())
        statuses = set(s.scalars(select(EvaluationRun.status)))
        n_values = s.scalar(select(func.count()).select_from(MetricValue))
    assert per_gen == dict.fromkeys(gids, 1)  # none lost, none duplicated
    assert statuses == {"succeeded"}
    assert n_values == PROCESSES * RUNS_EACH * 5
    # the values are those each process wrote for its runs
    seeds = store.per_seed_values(MODEL, METHOD, "eval/edge_tv")
    assert seeds == {i: sample_metrics(g)["eval/edge_tv"] for i, g in enumerate(gids)}
    store.close()


@pytest.mark.slow
def test_concurrent_first_use_migrates_once_and_shares_identities(store_url):
    n = 4
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=worker_open_and_generate, args=(store_url, seed, queue))
             for seed in range(n)]
    for p in procs:
        p.start()
    results = _collect(procs, queue)
    assert sorted(results) == [("ok", s) for s in range(n)], results
    with Store.open(store_url) as store:
        assert migrate.current_revision(store.engine) == migrate.head_revision()
        counts = store.counts()
        with store.read_session() as s:
            assert s.scalar(select(func.count()).select_from(MetricDefinition).where(
                MetricDefinition.name.in_(list(METRICS)))) == len(METRICS)
    assert (counts["models"], counts["methods"], counts["generation_runs"]) == (1, 1, n)


def test_writer_killed_mid_transaction_leaves_nothing_and_rerun_succeeds(store_url):
    store = Store.open(store_url)
    gid = make_generation_run(store)
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    p = ctx.Process(target=worker_half_write, args=(store_url, gid, ready))
    p.start()
    try:
        assert ready.wait(TIMEOUT_S), "worker never reached the middle of its transaction"
        os.kill(p.pid, signal.SIGKILL)
    finally:
        p.join(TIMEOUT_S)
    assert p.exitcode == -signal.SIGKILL
    counts = store.counts()
    assert counts["evaluation_runs"] == 0 and counts["metric_values"] == 0
    ev = store.record_evaluation(gid, sample_metrics(1))  # the re-run takes the lock and wins
    with store.read_session() as s:
        assert s.get(EvaluationRun, ev).status == "succeeded"
    assert store.counts()["metric_values"] == 5
    store.close()


# --- N concurrent `bdgen sweep` processes over one grid (issue 13 items 1 and 5) ---------
SWEEPS = 3  # more sweeps than cores: they race for every run of the grid
GRID_METHODS = ("random_argmax_no_remask", "llada_topp0.9_no_remask")
GRID_SEEDS = (1, 2)


@pytest.mark.slow
def test_concurrent_sweeps_do_every_run_and_the_denoising_once(store_url, tmp_path,
                                                              monkeypatch):
    """3 sweeps of the same grid (with evaluation and the model's denoising metrics) at
    once: every process exits 0, the store holds each run, evaluation and denoising
    evaluation exactly once, and MLflow holds exactly one run of each."""
    import subprocess
    import sys
    from pathlib import Path

    from _store_support import count_rows

    from bdgen.diffusion.trainer import TrainConfig
    from bdgen.pipeline.data import prepare_dataset
    from bdgen.pipeline.tracked_train import tracked_train
    from bdgen.pipeline.workspace import init_workspace
    from bdgen.tracking import Tracker, experiment_name

    monkeypatch.setenv("BDGEN_DB_URL", store_url)
    ws = init_workspace(tmp_path / "ws")
    _, data = prepare_dataset("synthetic", num_graphs=120, seed=0, workspace=ws)
    model = tracked_train(ws, data, model="tiny", device="cpu", progress=False,
                          config=TrainConfig(steps=6, batch_size=16, checkpoint_every=100,
                                             val_every=100, log_every=3))
    # one torch thread per sweep (as this test process has, conftest.py): more sweeps than
    # cores race for the runs; their torch threads need not fight over the cores as well
    env = {**os.environ, "BDGEN_WORKSPACE": str(ws.root), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "BDGEN_DB_URL": store_url}
    cmd = [sys.executable, "-c", "from bdgen.cli.main import cli; cli()", "sweep",
           "--models", model.model_id, "--methods", ",".join(GRID_METHODS), "--seeds",
           ",".join(map(str, GRID_SEEDS)), "--num-samples", "16", "--steps", "5",
           "--device", "cpu"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(SWEEPS)]
    outs = [p.communicate(timeout=TIMEOUT_S)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * SWEEPS, outs
    assert not any("Traceback" in o for o in outs), outs
    runs = len(GRID_METHODS) * len(GRID_SEEDS)
    counts = count_rows(store_url)
    assert counts == {"generation_runs": runs, "evaluation_runs": runs,
                      "denoising_evaluations": 1, "failed": 0, "job_claims": 0}, counts
    tracker = Tracker.for_workspace(ws.root)
    exp = experiment_name(model.dataset_id)
    per_kind = {k: len(tracker.find_runs(exp, {"bdgen.kind": k}))
                for k in ("generate", "evaluate", "denoising")}
    assert per_kind == {"generate": runs, "evaluate": runs, "denoising": 1}, per_kind
