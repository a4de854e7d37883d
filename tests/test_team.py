"""Team mode end to end on loopback (docs/TEAM.md): one PostgreSQL store, one `mlflow
server` (backed by its own database on the same PostgreSQL server, artifacts in a local
directory), one local-directory DVC remote. Workspace A trains, generates, evaluates and
pushes; a fresh workspace B pulls, verifies every file against the store's sha256 and prints
the same leaderboard, character for character."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from _store_support import drop_pg_database, fresh_pg_url

from bdgen.tracking.mlflow_server import free_port, server_command, wait_for_server
from bdgen.util.hashing import file_digests

REPO = Path(__file__).resolve().parents[1]
PROFILE = str(REPO / "configs" / "pipeline-leaderboard.yaml")


@pytest.fixture
def team(tmp_path):
    """A fresh store database, and an mlflow server on loopback backed by another fresh
    database of the same PostgreSQL server; both removed afterwards."""
    store_url, store_db = fresh_pg_url()
    mlflow_url, mlflow_db = fresh_pg_url()
    port = int(os.environ.get("BDGEN_TEST_MLFLOW_PORT") or free_port())
    server = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "mlflow-server.log", "w")  # noqa: SIM115 (closed in finally)
    proc = subprocess.Popen(server_command(mlflow_url, port, tmp_path / "mlflow-artifacts"),
                            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        wait_for_server(server, proc, timeout=180)
        yield {"BDGEN_DB_URL": store_url, "MLFLOW_TRACKING_URI": server}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        drop_pg_database(store_db)
        drop_pg_database(mlflow_db)


def _bdgen(cwd: Path, env: dict[str, str], *args: str) -> str:
    full = {**os.environ, **env, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            "DVC_NO_ANALYTICS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    full.pop("BDGEN_WORKSPACE", None)
    res = subprocess.run([str(Path(sys.executable).parent / "bdgen"), *args], cwd=cwd,
                         env=full, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, \
        f"bdgen {' '.join(args)}:\n{res.stdout[-2000:]}{res.stderr[-3000:]}"
    return res.stdout


def _samples(ws: Path) -> dict[str, str]:
    return {p.relative_to(ws).as_posix(): file_digests(p)[1]
            for p in sorted((ws / "artifacts" / "samples").rglob("*.pt"))}


@pytest.mark.slow
@pytest.mark.postgres
def test_second_researcher_pulls_and_sees_the_same_leaderboard(tmp_path, team):
    remote = tmp_path / "dvc-remote"
    a, b = tmp_path / "alice", tmp_path / "bob"

    _bdgen(tmp_path, team, "init", str(a), "--remote", str(remote))
    _bdgen(a, team, "data", "prepare", "--num-graphs", "200")
    (dataset,) = (a / "data").glob("*.pt")
    _bdgen(a, team, "train", "--dataset", str(dataset), "--model", "tiny", "--steps", "10",
           "--batch-size", "16", "--val-every", "5", "--log-every", "5", "--device", "cpu",
           "--quiet")
    (ckpt,) = (a / "artifacts" / "models").glob("*/checkpoint_final.pt")
    _bdgen(a, team, "generate", "--model", str(ckpt), "--method", "random_argmax_no_remask",
           "--method", "llada_topp0.9_no_remask", "--seeds", "1,2",
           "--num-samples", "20", "--steps", "5", "--device", "cpu")
    _bdgen(a, team, "evaluate", "--pending")
    board_a = _bdgen(a, team, "leaderboard", "--profile", PROFILE)
    assert "llada_topp0.9_no_remask" in board_a and "random_argmax_no_remask" in board_a
    pushed = _bdgen(a, team, "push")
    assert pushed.startswith("pushed 6 artifact(s)")  # dataset, checkpoint, 4 samples files

    _bdgen(tmp_path, team, "init", str(b), "--remote", str(remote))
    pulled = _bdgen(b, team, "pull")
    assert "pulled 6 artifact(s) (6 downloaded); 5 checked against the store's sha256" \
        in pulled, pulled
    assert _samples(b) == _samples(a) and len(_samples(a)) == 4
    assert file_digests(b / ckpt.relative_to(a)) == file_digests(ckpt)
    board_b = _bdgen(b, team, "leaderboard", "--profile", PROFILE)
    assert board_b == board_a

    again = _bdgen(b, team, "pull")  # idempotent: nothing new to download
    assert "(0 downloaded)" in again, again
