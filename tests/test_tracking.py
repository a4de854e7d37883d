"""bdgen.tracking against a real MLflow SQLite store, a real DVC repo and a real mlflow server."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from bdgen.errors import BdgenError
from bdgen.pipeline.progress import StepProgress
from bdgen.pipeline.workspace import Workspace, init_workspace
from bdgen.store.api import Store
from bdgen.tracking import NullTracker, Tracker, dvc_file, track
from bdgen.tracking.live import LiveMetrics
from bdgen.tracking.mlflow_server import free_port
from bdgen.util.hashing import file_digests

REPO = Path(__file__).resolve().parents[1]


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


def test_live_metrics_flush_at_a_bounded_rate_with_measurement_timestamps(tracker):
    now = [0.0]
    with tracker.open_run("train", "live", "bdgen/test-exp") as run:
        live = LiveMetrics(run, every_s=2.0, clock=lambda: now[0])
        for step in range(1, 6):  # 5 rows within 2 s of fake time: nothing sent yet
            live.add({"curve/train_loss": 1.0 / step, "bad": float("nan")}, step)
            time.sleep(0.002)
        assert live.flushes == 0
        assert tracker._client.get_metric_history(run.run_id, "curve/train_loss") == []
        now[0] = 2.5  # the bound has passed: the next row flushes all six
        live.add({"curve/train_loss": 0.1}, 6)
        assert live.flushes == 1
        live.add({"curve/train_loss": 0.05}, 7)
        live.close()
    history = tracker._client.get_metric_history(run.run_id, "curve/train_loss")
    assert [m.step for m in history] == [1, 2, 3, 4, 5, 6, 7]
    stamps = [m.timestamp for m in history]
    assert stamps == sorted(stamps) and stamps[4] > stamps[0]  # when measured, not sent
    assert live.flushes == 2
    assert "bad" not in tracker.get_run(run.run_id).data.metrics


def test_heartbeat_prints_progress_lines_without_a_tty():
    out = io.StringIO()  # not a TTY
    with StepProgress("train", 100, interval=0.05, stream=out) as beat:
        assert beat.lines
        beat.update(10, loss=2.5)
        time.sleep(0.3)
        beat.update(60, loss=1.25)
        time.sleep(0.2)
    lines = out.getvalue().splitlines()
    assert len(lines) >= 4
    assert lines[0].startswith("train: step 10/100 (10%), loss 2.5000")
    assert lines[-1].startswith("train: step 60/100 (60%), loss 1.2500") and "eta" in lines[-1]
    quiet = io.StringIO()
    with StepProgress("train", 100, interval=0.05, stream=quiet, enabled=False) as beat:
        beat.update(1)
        time.sleep(0.15)
    assert quiet.getvalue() == ""


def test_runs_of_dead_processes_are_reaped_killed(tracker, tmp_path):
    """A process that SIGKILLs itself with an open run; the next tracker marks it KILLED."""
    code = ("import os, signal\n"
            "from bdgen.tracking import Tracker\n"
            f"t = Tracker({tracker.uri!r})\n"
            "run = t.create_run('evaluate', 'zombie', 'bdgen/reap')\n"
            "print(run.run_id, flush=True)\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    run_id = proc.stdout.split()[0]
    assert tracker.run_status(run_id) == "RUNNING"
    with tracker.open_run("evaluate", "alive", "bdgen/reap") as live:
        assert tracker.run_status(live.run_id) == "RUNNING"  # ours: alive, not reaped
    fresh = Tracker(tracker.uri)
    fresh.experiment_id("bdgen/reap")
    assert fresh.run_status(run_id) == "KILLED"
    assert fresh.run_status(live.run_id) == "FINISHED"


def test_claims_decide_one_creator_and_dead_claims_are_taken_over(tracker, tmp_path):
    from bdgen.pipeline.mlflow_links import Link, claim_dead, link_run, new_claim

    store = Store.open(f"sqlite:///{tmp_path / 's.db'}")
    try:
        def meta(key: str) -> Link:
            return Link(lambda: store.meta_link(key),
                        lambda old, new: store.swap_meta_link(key, old, new))

        link = meta("mlflow.parent:test")
        made: list[str] = []

        def create(claim: str) -> str:
            run_id = tracker.create_parent_run("m", "bdgen/claims", {"bdgen.result": "r"},
                                               claim=claim)
            made.append(run_id)
            return run_id

        first = link_run(link, tracker, "bdgen/claims", create)
        again = link_run(link, tracker, "bdgen/claims", create)
        assert first == (made[0], True) and again == (made[0], False) and len(made) == 1
        # a dead process's claim, with the run it made before dying: adopted, not redone
        dead = new_claim().replace(f":{os.getpid()}:", ":999999999:")
        assert claim_dead(dead) and not claim_dead(new_claim().replace(
            f":{os.getpid()}:", f":{os.getppid()}:"))  # a live process's claim
        assert claim_dead(new_claim())  # ours, but no create() of ours is running
        orphan = tracker.create_parent_run("m", "bdgen/claims", {"bdgen.result": "r2"},
                                           claim=dead)
        key = "mlflow.parent:test2"
        assert store.swap_meta_link(key, None, dead) == dead
        assert store.swap_meta_link(key, None, "other") == dead  # taken: no overwrite
        assert link_run(link, tracker, "bdgen/claims", create) == (made[0], False)
        link2 = meta(key)
        assert link_run(link2, tracker, "bdgen/claims", create) == (orphan, False)
        assert store.meta_link(key) == orphan and len(made) == 1
    finally:
        store.close()
