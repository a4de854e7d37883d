"""Read commands on stores they must not write (issue 13 item 9, issue 14): a missing store
is refused (a mistyped --db creates nothing), SQLite is opened mode=ro (reads work, writes
fail), and `bdgen db upgrade <older revision>` refuses to pretend it did something."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from _store_support import known_store
from click.testing import CliRunner
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from bdgen.cli.main import cli
from bdgen.errors import BdgenError
from bdgen.store import migrate
from bdgen.store.api import Store
from bdgen.store.engine import make_engine

REPO = Path(__file__).resolve().parents[1]
NOREMASK = "llada_topp0.9_no_remask"


def _store(path: Path) -> Path:
    known_store(str(path), {"mA": [0.70, 0.71, 0.72]})
    return path


def _cli(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, list(args))
    return res.exit_code, res.output


@pytest.mark.parametrize("command", [["leaderboard"],
                                     ["compare", NOREMASK, "random_argmax_no_remask"],
                                     ["check", NOREMASK, "--expect", "v2_remasking"],
                                     ["report", "--out", "{tmp}/rep"], ["db", "current"]])
def test_read_commands_refuse_a_store_that_does_not_exist(tmp_path, command):
    missing = tmp_path / "nothere.db"
    args = [a.replace("{tmp}", str(tmp_path)) for a in command]
    code, out = _cli(*args, "--db", f"sqlite:///{missing}")
    assert code != 0 and "does not exist" in out and "Traceback" not in out, out
    assert not missing.exists()
    assert not list(tmp_path.glob("nothere.db*"))


def test_writing_commands_still_create_a_store(tmp_path):
    path = tmp_path / "new.db"
    code, out = _cli("db", "upgrade", "--db", str(path))
    assert code == 0, out
    assert migrate.current_revision(make_engine(f"sqlite:///{path}")) == migrate.head_revision()


def test_readonly_store_reads_and_cannot_write(tmp_path):
    path = _store(tmp_path / "s.db")
    store = Store.open(str(path), readonly=True)
    try:
        assert len(store.summary_results()) == 1
        with pytest.raises(OperationalError, match="readonly"), store.engine.begin() as conn:
            conn.execute(text("DELETE FROM metric_values"))
    finally:
        store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("select count(*) from metric_values").fetchone()[0] > 0


def test_read_commands_on_a_read_only_workspace(tmp_path):
    """chmod -w on the directory and the database; run the command as a non-root user when
    the tests run as root (root ignores permissions), else as ourselves."""
    ws = tmp_path / "ro"
    ws.mkdir()
    path = _store(ws / "bdgen.db")
    for extra in ws.glob("bdgen.db-*"):
        extra.unlink()  # a clean close leaves no -wal/-shm; be sure
    os.chmod(path, 0o444)
    os.chmod(ws, 0o555)
    tmp_path.chmod(0o755)
    cmd = [sys.executable, "-c", "from bdgen.cli.main import cli; cli()", "leaderboard",
           "--db", str(path), "--format", "json"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(tmp_path)}
    if os.geteuid() == 0 and shutil.which("runuser"):  # root ignores permissions: drop them
        probe = subprocess.run(["runuser", "-u", "nobody", "--", sys.executable, "-c",
                                "import bdgen"], env=env, capture_output=True)
        if probe.returncode == 0:
            cmd = ["runuser", "-u", "nobody", "--", *cmd]
        # else (the interpreter is not readable by nobody here) run as ourselves: the
        # mode=ro opening is still what is exercised
    try:
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    finally:
        os.chmod(ws, 0o755)
        os.chmod(path, 0o644)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "mA" in res.stdout and "Traceback" not in res.stderr


def test_db_upgrade_to_an_older_revision_refuses(tmp_path):
    path = tmp_path / "s.db"
    Store.open(str(path)).close()
    code, out = _cli("db", "upgrade", "0001", "--db", str(path))
    assert code != 0 and "db downgrade" in out and "Traceback" not in out, out
    engine = make_engine(f"sqlite:///{path}")
    assert migrate.current_revision(engine) == migrate.head_revision()
    with pytest.raises(BdgenError, match="downgrade"):
        migrate.upgrade(engine, "0002")
    assert migrate.upgrade(engine, migrate.head_revision()) == migrate.head_revision()
    engine.dispose()


def test_readonly_open_of_an_older_store_upgrades_it_once(tmp_path):
    path = tmp_path / "s.db"
    Store.open(str(path)).close()
    engine = make_engine(f"sqlite:///{path}")
    migrate.downgrade(engine, "0002")
    engine.dispose()
    Store.open(str(path), readonly=True).close()
    engine = make_engine(f"sqlite:///{path}")
    assert migrate.current_revision(engine) == migrate.head_revision()
    engine.dispose()
