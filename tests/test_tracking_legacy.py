"""Legacy import is logged to MLflow once per (method, seed), idempotently, rows linked."""

from __future__ import annotations

import shutil

from click.testing import CliRunner

from bdgen.cli.main import cli
from bdgen.pipeline.results_import import IMPORT_EXPERIMENT
from bdgen.pipeline.workspace import init_workspace
from bdgen.store.api import Store
from bdgen.tracking import Tracker
from bdgen.util.hashing import file_digests

FILES = ("llada_topp0.9_no_remask.json", "random_argmax_no_remask.json")


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
