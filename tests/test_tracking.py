"""bdgen.tracking against a real MLflow SQLite store, a real DVC repo and a real mlflow server."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import yaml

from bdgen.errors import BdgenError
from bdgen.pipeline.workspace import Workspace, init_workspace
from bdgen.tracking import NullTracker, Tracker, dvc_file, track
from bdgen.tracking.mlflow_tracker import free_port
from bdgen.util.hashing import file_digests


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    return init_workspace(tmp_path_factory.mktemp("trk") / "ws")


@pytest.fixture(scope="module")
def tracker(ws) -> Tracker:
    return Tracker.for_workspace(ws.root)


def test_init_makes_a_complete_idempotent_workspace(ws):
    for name in ("bdgen.toml", "bdgen.db", "mlflow.db", ".dvc", ".git", ".gitignore",
                 ".dvcignore"):
        assert (ws.root / name).exists(), name
    assert Workspace.find(ws.root / ".dvc") == ws
    config = (ws.root / ".dvc" / "config").read_text()
    assert "analytics = False" in config
    before = (ws.root / "bdgen.toml").read_text()
    assert init_workspace(ws.root) == ws  # re-running only fills gaps
    assert (ws.root / "bdgen.toml").read_text() == before


def test_init_inside_a_git_ignored_dir_gets_its_own_git_repo(tmp_path):
    outer = tmp_path / "checkout"
    outer.mkdir()
    subprocess.run(["git", "init", "-q", str(outer)], check=True)
    (outer / ".gitignore").write_text("/workspace/\n")
    ws = init_workspace(outer / "workspace", mlflow=False)
    assert (ws.root / ".git").is_dir() and (ws.root / ".dvc").is_dir()


def test_outside_a_workspace_says_how_to_create_one(tmp_path, monkeypatch):
    monkeypatch.delenv("BDGEN_WORKSPACE", raising=False)
    with pytest.raises(BdgenError, match="bdgen init"):
        Workspace.find(tmp_path)


def test_run_records_params_metrics_series_tags(tracker):
    with tracker.open_run("generate", "m/meth/42", "bdgen/test-exp",
                          params={"sampling": {"steps": 20, "top_p": None}, "seed": 42},
                          tags={"bdgen.seed": 42, "bdgen.none": None}) as run:
        run.log_metrics({"eval/validity_rate": 0.5, "by_rooms": {"3": 0.25}, "label": "x",
                         "nan": float("nan")})
        run.log_metric_series("train/loss", [3.0, 2.0, 1.5])
        run.set_tags({"bdgen.generation_run_id": 7})
    got = tracker.get_run(run.run_id)
    assert got.info.status == "FINISHED"
    assert got.data.params == {"sampling.steps": "20", "sampling.top_p": "", "seed": "42"}
    assert got.data.metrics == {"eval/validity_rate": 0.5, "by_rooms.3": 0.25, "train/loss": 1.5}
    assert got.data.tags["bdgen.kind"] == "generate"
    assert got.data.tags["bdgen.generation_run_id"] == "7"
    assert "bdgen.none" not in got.data.tags
    assert got.data.tags["mlflow.runName"] == "generate:m/meth/42"
    history = tracker._client.get_metric_history(run.run_id, "train/loss")
    assert [(m.step, m.value) for m in history] == [(0, 3.0), (1, 2.0), (2, 1.5)]
    assert tracker.find_runs("bdgen/test-exp", {"bdgen.generation_run_id": "7"}) == [run.run_id]


def test_failed_body_marks_run_failed(tracker):
    with pytest.raises(RuntimeError), tracker.open_run("train", "boom", "bdgen/test-exp") as run:
        raise RuntimeError("boom")
    assert tracker.get_run(run.run_id).info.status == "FAILED"


def test_null_tracker_records_nothing():
    with NullTracker().open_run("generate", "x", "bdgen/x", params={"a": 1}) as run:
        run.log_metrics({"a": 1.0})
        run.log_artifact("/nonexistent")
    assert run.run_id is None


def test_unreachable_server_fails_fast_with_hint():
    port = free_port()  # nothing listens there
    start = time.monotonic()
    with pytest.raises(BdgenError, match=r"unreachable.*--no-mlflow"):
        Tracker(f"http://127.0.0.1:{port}")
    assert time.monotonic() - start < 10  # generous: it is one refused connection


def test_track_writes_dvc_file_with_matching_md5(ws):
    path = ws.root / "artifacts" / "samples" / "m-1" / "random" / "seed-1_n5_s3.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00bdgen" * 1000)
    ref = track(ws.root, path)
    md5, sha = file_digests(path)
    assert (ref.path, ref.md5, ref.sha256) == ("artifacts/samples/m-1/random/seed-1_n5_s3.pt",
                                               md5, sha)
    dvc_meta = yaml.safe_load(dvc_file(path).read_text())
    assert dvc_meta["outs"][0]["md5"] == md5
    cached = ws.root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
    assert cached.read_bytes() == path.read_bytes()
    assert ref.tags("samples")["bdgen.artifact.samples.sha256"] == sha


def test_track_refuses_paths_outside_the_workspace(ws, tmp_path):
    outside = tmp_path / "x.pt"
    outside.write_bytes(b"x")
    with pytest.raises(BdgenError, match="outside the workspace"):
        track(ws.root, outside)


def test_workspace_paths_are_identity_derived(ws):
    p = ws.samples_path("v1-loglinear-abc", "llada_topp0.9", 42, 50, 20)
    assert p.relative_to(ws.root) == Path(
        "artifacts/samples/v1-loglinear-abc/llada_topp0.9/seed-42_n50_s20.pt")
