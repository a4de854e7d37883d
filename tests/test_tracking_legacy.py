"""Legacy import is logged to MLflow once per (method, seed), idempotently, rows linked."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from _store_support import drop_pg_database, fresh_pg_url
from click.testing import CliRunner
from mlflow import MlflowClient

from bdgen.cli.main import cli
from bdgen.pipeline.results_import import IMPORT_EXPERIMENT
from bdgen.pipeline.workspace import init_workspace
from bdgen.store.api import Store
from bdgen.tracking import Tracker
from bdgen.tracking.mlflow_server import free_port, server_command, wait_for_server
from bdgen.tracking.mlflow_tracker import default_tracking_uri
from bdgen.util.hashing import file_digests

FILES = ("llada_topp0.9_no_remask.json", "random_argmax_no_remask.json")
REPO = Path(__file__).resolve().parents[1]


def test_import_legacy_logs_one_mlflow_run_per_method_seed(tmp_path, legacy_dir, monkeypatch):
    ws = init_workspace(tmp_path / "ws", dvc=False)
    src = tmp_path / "loglinear_noise_sc"
    src.mkdir()
    for name in FILES:
        shutil.copy(f"{legacy_dir}/{name}", src / name)
    monkeypatch.chdir(ws.root)
    monkeypatch.delenv("BDGEN_WORKSPACE", raising=False)
    monkeypatch.delenv("BDGEN_DB_URL", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    runner = CliRunner()
    first = runner.invoke(cli, ["import-legacy", str(src)])
    assert first.exit_code == 0, first.output
    assert "MLflow: 10 legacy-import run(s) created" in first.output
    again = runner.invoke(cli, ["import-legacy", str(src)])
    assert again.exit_code == 0, again.output
    assert "MLflow: 0 legacy-import run(s) created" in again.output

    tracker = Tracker.for_workspace(ws.root)
    store = Store.open(f"sqlite:///{ws.db_path}")
    try:
        for name in FILES:
            sha = file_digests(src / name)[1]
            rows = store.imported_runs(sha)
            assert len(rows) == 5
            runs = tracker.find_runs(IMPORT_EXPERIMENT, {"bdgen.legacy.source_sha256": sha})
            assert sorted(runs) == sorted(r.mlflow_run_id for r in rows)
            run = tracker.get_run(rows[0].mlflow_run_id)
            assert run.data.tags["bdgen.kind"] == "legacy-import"
            assert run.data.tags["bdgen.evaluation_run_id"] == str(rows[0].evaluation_run_id)
            assert run.data.metrics  # canonical metric names with the per-seed values
    finally:
        store.close()


def test_check_records_verdicts_as_tags_on_the_evaluation_runs(tmp_path, legacy_dir,
                                                                monkeypatch):
    ws = init_workspace(tmp_path / "ws", dvc=False)
    src = tmp_path / "loglinear_noise_sc"
    src.mkdir()
    shutil.copy(f"{legacy_dir}/{FILES[0]}", src / FILES[0])
    monkeypatch.chdir(ws.root)
    for var in ("BDGEN_WORKSPACE", "BDGEN_DB_URL", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    runner = CliRunner()
    assert runner.invoke(cli, ["import-legacy", str(src)]).exit_code == 0
    r = runner.invoke(cli, ["check", "--expect", "v2_remasking", "llada_topp0.9_no_remask"])
    # llada_topp0.9_no_remask has 28.6 unique archetypes: below the failure threshold of 50
    assert r.exit_code == 1, r.output
    assert "verdicts recorded as tags on 5 MLflow run(s)" in r.output

    tracker = Tracker.for_workspace(ws.root)
    store = Store.open(f"sqlite:///{ws.db_path}")
    try:
        rows = store.imported_runs(file_digests(src / FILES[0])[1])
        for row in rows:
            tags = tracker.get_run(row.mlflow_run_id).data.tags
            assert tags["bdgen.verdict.v2_remasking.num_sample_modes"] == "fail"
            assert tags["bdgen.verdict.v2_remasking.inside_validity"] == "pass"
    finally:
        store.close()
    offline = runner.invoke(cli, ["check", "--expect", "v2_remasking", "--no-mlflow",
                                  "llada_topp0.9_no_remask"])
    assert "verdicts recorded" not in offline.output


# -- run shape: one parent per result, seed runs nested, aggregates = the store's ----------

def _all_runs(uri: str, experiment: str = IMPORT_EXPERIMENT) -> list:
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs, token = [], None
    while True:
        page = client.search_runs([exp.experiment_id], max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def _shape(runs: list) -> dict:
    """Counts that must hold exactly: seed runs per (file, seed), parents per result."""
    seeds = Counter((r.data.tags.get("bdgen.legacy.source_sha256"), r.data.tags["bdgen.seed"])
                    for r in runs if r.data.tags.get("bdgen.kind") == "legacy-import")
    parents = Counter(r.data.tags["bdgen.result"] for r in runs
                      if r.data.tags.get("bdgen.kind") == "result")
    parent_ids = {r.info.run_id for r in runs if r.data.tags.get("bdgen.kind") == "result"}
    return {"seed_runs": sum(seeds.values()), "pairs": len(seeds),
            "max_per_pair": max(seeds.values(), default=0), "parents": sum(parents.values()),
            "max_per_result": max(parents.values(), default=0),
            "statuses": Counter(r.info.status for r in runs),
            "orphans": sum(r.data.tags.get("bdgen.kind") == "legacy-import"
                           and r.data.tags.get("mlflow.parentRunId") not in parent_ids
                           for r in runs)}


def _copy(legacy_dir: str, dest: Path, names) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(f"{legacy_dir}/{name}", dest / name)
    return dest


def test_import_nests_seed_runs_under_one_parent_per_result(tmp_path, legacy_dir,
                                                            monkeypatch):
    ws = init_workspace(tmp_path / "ws", dvc=False)
    src = _copy(legacy_dir, tmp_path / "loglinear_noise_sc", FILES)
    monkeypatch.chdir(ws.root)
    for var in ("BDGEN_WORKSPACE", "BDGEN_DB_URL", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    assert CliRunner().invoke(cli, ["import-legacy", str(src)]).exit_code == 0
    tracker = Tracker.for_workspace(ws.root)
    runs = _all_runs(tracker.uri)
    shape = _shape(runs)
    assert (shape["seed_runs"], shape["parents"], shape["orphans"]) == (10, 2, 0)
    assert shape["statuses"] == Counter({"FINISHED": 12})
    store = Store.open(f"sqlite:///{ws.db_path}")
    try:
        results = {r.method: r for r in store.summary_results()}
        for parent in (r for r in runs if r.data.tags["bdgen.kind"] == "result"):
            method = parent.data.tags["bdgen.method"]
            assert parent.data.tags["mlflow.runName"] == method  # short, readable
            res = results[method]
            assert parent.data.metrics["n"] == 5
            for name, agg in res.metrics.items():  # the store's summaries, bit for bit
                assert parent.data.metrics[name] == agg.mean, name
                assert parent.data.metrics[f"{name}_std"] == agg.std, name
            children = [r for r in runs
                        if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
            assert sorted(int(c.data.tags["bdgen.seed"]) for c in children) == \
                sorted(res.seeds)
            assert {c.data.tags["mlflow.runName"] for c in children} == \
                {f"{method}/{s}" for s in res.seeds}
            validity = [c.data.metrics["validity_rate"] for c in children]
            assert parent.data.metrics["validity_rate"] == pytest.approx(
                sum(validity) / len(validity))
        child = next(r for r in runs if r.data.tags["bdgen.kind"] == "legacy-import")
        assert child.data.tags["mlflow.user"] and child.data.tags["mlflow.source.name"]
        assert child.data.tags["mlflow.source.git.commit"]
        (ds,) = child.inputs.dataset_inputs
        assert (ds.dataset.name, ds.dataset.digest) == ("graph2plan", "graph2plan-legacy")
    finally:
        store.close()


def _import_procs(src: Path, n: int, env: dict, cwd: Path) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "from bdgen.cli.main import cli; cli()",
                              "import-legacy", str(src)], cwd=cwd, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for _ in range(n)]


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("BDGEN_WORKSPACE", "BDGEN_DB_URL", "MLFLOW_TRACKING_URI", "BDGEN_FAULT")}
    return {**env, "PYTHONPATH": str(REPO), **extra}


CONCURRENT_FILES = 3  # of the 22 files: 15 (file, seed) pairs, 3 results, raced by 4
PAIRS = 5 * CONCURRENT_FILES  # five seeds per legacy result file
CONCURRENT_SHAPE = {"seed_runs": PAIRS, "pairs": PAIRS, "max_per_pair": 1,
                    "parents": CONCURRENT_FILES, "max_per_result": 1,
                    "statuses": Counter({"FINISHED": PAIRS + CONCURRENT_FILES}),
                    "orphans": 0}


def _concurrent_import(legacy_dir: str, tmp_path: Path, env: dict, uri: str) -> dict:
    names = sorted(p.name for p in Path(legacy_dir).glob("*.json"))[:CONCURRENT_FILES]
    src = _copy(legacy_dir, tmp_path / "loglinear_noise_sc", names)
    ws = init_workspace(tmp_path / "ws", dvc=False)
    procs = _import_procs(src, 4, env, ws.root)
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, outs
    assert not any("Traceback" in o for o in outs), outs
    created = sum(int(re.search(r"MLflow: (\d+) legacy-import", o).group(1)) for o in outs)
    assert created == PAIRS  # the creators' own count adds up too
    return _shape(_all_runs(uri or default_tracking_uri(ws.root)))


@pytest.mark.slow
def test_four_concurrent_imports_make_exactly_one_run_per_file_seed_sqlite(tmp_path,
                                                                          legacy_dir):
    shape = _concurrent_import(legacy_dir, tmp_path, _env(), "")
    assert shape == CONCURRENT_SHAPE


@pytest.fixture
def mlflow_server(tmp_path):
    """A real ``mlflow server`` on loopback (own SQLite backend), stopped afterwards."""
    port = free_port()
    proc = subprocess.Popen(server_command(f"sqlite:///{tmp_path / 'server.db'}", port,
                                           tmp_path / "server-artifacts"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_server(url, proc, timeout=120)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # a busy machine: do not wait for a graceful stop
            proc.kill()
            proc.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.postgres
def test_four_concurrent_imports_postgres_store_and_mlflow_server(tmp_path, legacy_dir,
                                                                 mlflow_server):
    url, name = fresh_pg_url()
    try:
        shape = _concurrent_import(legacy_dir, tmp_path,
                                   _env(BDGEN_DB_URL=url, MLFLOW_TRACKING_URI=mlflow_server),
                                   mlflow_server)
    finally:
        drop_pg_database(name)
    assert shape == CONCURRENT_SHAPE


@pytest.mark.parametrize("visit", [1, 4])
def test_import_killed_mid_logging_leaves_no_running_run_after_rerun(tmp_path, legacy_dir,
                                                                    visit):
    """SIGKILL right after the k-th seed run was created (before its metrics): one RUNNING
    run is left; the rerun adopts it (no duplicate), fills it and marks it FINISHED."""
    src = _copy(legacy_dir, tmp_path / "loglinear_noise_sc", FILES)
    ws = init_workspace(tmp_path / "ws", dvc=False)
    (killed,) = _import_procs(src, 1, _env(BDGEN_FAULT=f"legacy-import.run-created:{visit}"),
                              ws.root)
    killed.communicate(timeout=300)
    assert killed.returncode == -signal.SIGKILL
    uri = default_tracking_uri(ws.root)
    before = _all_runs(uri)
    (zombie,) = [r for r in before if r.info.status == "RUNNING"]
    assert not zombie.data.metrics  # killed before its metrics were logged
    (rerun,) = _import_procs(src, 1, _env(), ws.root)
    out = rerun.communicate(timeout=300)[0]
    assert rerun.returncode == 0, out
    after = _all_runs(uri)
    shape = _shape(after)
    assert shape == {"seed_runs": 10, "pairs": 10, "max_per_pair": 1, "parents": 2,
                     "max_per_result": 1, "statuses": Counter({"FINISHED": 12}), "orphans": 0}
    adopted = next(r for r in after if r.info.run_id == zombie.info.run_id)
    assert adopted.data.metrics["validity_rate"] >= 0
    store = Store.open(f"sqlite:///{ws.db_path}")
    try:
        linked = {r.mlflow_run_id for f in FILES for r in store.imported_runs(
            file_digests(src / f)[1])}
    finally:
        store.close()
    assert zombie.info.run_id in linked and len(linked) == 10


@pytest.mark.slow
def test_import_through_an_mlflow_server_is_nested_and_idempotent(tmp_path, legacy_dir,
                                                                  mlflow_server, monkeypatch):
    ws = init_workspace(tmp_path / "ws", dvc=False, mlflow=False)
    src = _copy(legacy_dir, tmp_path / "loglinear_noise_sc", FILES)
    monkeypatch.chdir(ws.root)
    for var in ("BDGEN_WORKSPACE", "BDGEN_DB_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    runner = CliRunner()
    first = runner.invoke(cli, ["import-legacy", str(src)])
    assert "MLflow: 10 legacy-import run(s) created" in first.output, first.output
    again = runner.invoke(cli, ["import-legacy", str(src)])
    assert "MLflow: 0 legacy-import run(s) created" in again.output, again.output
    assert _shape(_all_runs(mlflow_server)) == {
        "seed_runs": 10, "pairs": 10, "max_per_pair": 1, "parents": 2, "max_per_result": 1,
        "statuses": Counter({"FINISHED": 12}), "orphans": 0}


def test_guided_import_logs_constraint_metrics_to_mlflow(tmp_path, legacy_dir, monkeypatch):
    from pathlib import Path

    import pytest

    src_file = (Path(legacy_dir).parent / "guided_loglinear" / "round2_guid"
                / "llada_topp0.9_no_remask_guided_kstar_K4_a0.1.json")
    if not src_file.is_file():
        pytest.skip("guided legacy results absent")
    ws = init_workspace(tmp_path / "ws", dvc=False)
    src = tmp_path / "loglinear_noise_sc" / "round2_guid"
    src.mkdir(parents=True)
    shutil.copy(src_file, src / src_file.name)
    monkeypatch.chdir(ws.root)
    for key in ("BDGEN_WORKSPACE", "BDGEN_DB_URL", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(key, raising=False)
    out = CliRunner().invoke(cli, ["import-legacy", str(src.parent)])
    assert out.exit_code == 0, out.output
    assert "MLflow: 2 legacy-import run(s) created" in out.output
    store = Store.open(f"sqlite:///{ws.db_path}")
    try:
        rows = store.imported_runs(file_digests(src / src_file.name)[1])
    finally:
        store.close()
    run = Tracker.for_workspace(ws.root).get_run(rows[0].mlflow_run_id)
    m = run.data.metrics
    # MLflow allows no "+" in names: the 3+ histogram bin is logged as 3plus
    assert "constraint/violation_histogram_no_bath_kitchen/3plus" in m
    assert 0 <= m["constraint/satisfaction_overall"] <= 1
