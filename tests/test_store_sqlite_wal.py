"""The switch of a new SQLite store to WAL waits out a lock SQLite reports at once.

On a brand-new file, processes opening the store together all switch it to WAL, and SQLite
may answer one of them "database is locked" without calling its busy handler (the deadlock
case of sqlite3_busy_handler). A connection with no busy timeout gets the same immediate
answer from any lock, which is how these tests hold one deterministically.
"""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from bdgen.store import engine


def _locked_rollback_file(path):
    holder = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    return holder


def test_wal_switch_waits_until_the_lock_is_released(tmp_path):
    path = tmp_path / "store.db"
    holder = _locked_rollback_file(path)
    releaser = threading.Timer(0.3, holder.rollback)
    releaser.start()
    conn = sqlite3.connect(path, timeout=0, isolation_level=None)  # SQLite answers at once
    t0 = time.monotonic()
    engine._set_wal(conn.cursor())
    assert time.monotonic() - t0 >= 0.25
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    releaser.join()
    conn.close()
    holder.close()


def test_wal_switch_gives_up_after_the_busy_timeout(tmp_path, monkeypatch):
    path = tmp_path / "store.db"
    holder = _locked_rollback_file(path)
    monkeypatch.setattr(engine, "SQLITE_BUSY_TIMEOUT_MS", 200)
    conn = sqlite3.connect(path, timeout=0, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        engine._set_wal(conn.cursor())
    conn.close()
    holder.rollback()
    holder.close()
