"""bdgen push / pull through a local-directory DVC remote with a shared SQLite store (fast;
the PostgreSQL + mlflow server version is tests/test_team.py): files arrive with their
paths, a pull that would hand over another file than the store recorded is refused."""

from __future__ import annotations

import pytest

from bdgen.errors import BdgenError
from bdgen.pipeline.store import open_store
from bdgen.pipeline.team import pull_workspace, push_workspace
from bdgen.pipeline.workspace import init_workspace
from bdgen.tracking import track
from bdgen.tracking.remote import remote_url
from bdgen.util.hashing import file_digests

MODEL = "v1-loglinear-0123456789"
METHOD = "llada_topp0.9_no_remask"
REL = f"artifacts/samples/{MODEL}/{METHOD}/seed-1_n4_s2.pt"


@pytest.fixture
def shared(tmp_path, monkeypatch):
    monkeypatch.setenv("BDGEN_DB_URL", f"sqlite:///{tmp_path / 'shared.db'}")
    a = init_workspace(tmp_path / "a", mlflow=False, remote=str(tmp_path / "remote"))
    f = a.root / REL
    f.parent.mkdir(parents=True)
    f.write_bytes(b"samples of seed 1")
    ref = track(a.root, f)
    with open_store(workspace=a) as store:
        store.get_or_create_model(MODEL, "v1", "loglinear")
        gid = store.start_generation_run(MODEL, METHOD, 1, 4, 2, no_mlflow=True)
        store.finish_generation_run(gid, ref.sha256, ref.path)
    return tmp_path, a, gid


def test_push_then_pull_into_a_fresh_workspace(shared):
    tmp_path, a, _ = shared
    assert remote_url(a.root) == str((tmp_path / "remote").resolve())
    sent = push_workspace(a)
    assert sent.paths == [REL]
    b = init_workspace(tmp_path / "b", mlflow=False, remote=str(tmp_path / "remote"))
    got = pull_workspace(b)
    assert (got.paths, got.fetched, got.verified) == ([REL], 1, 1)
    assert file_digests(b.root / REL) == file_digests(a.root / REL)
    assert pull_workspace(b).fetched == 0  # nothing new the second time


def test_pull_refuses_a_file_the_store_did_not_record(shared):
    tmp_path, a, gid = shared
    push_workspace(a)
    with open_store(workspace=a) as store:  # the store now says another file was evaluated
        store.start_generation_run(MODEL, METHOD, 1, 4, 2, no_mlflow=True, force=True)
        store.finish_generation_run(gid, "0" * 64, REL)
    b = init_workspace(tmp_path / "b", mlflow=False, remote=str(tmp_path / "remote"))
    with pytest.raises(BdgenError, match="differs from the store"):
        pull_workspace(b)


def test_push_without_a_remote_is_one_clear_error(tmp_path):
    ws = init_workspace(tmp_path / "w", mlflow=False)
    with pytest.raises(BdgenError, match="no DVC remote"):
        push_workspace(ws)
