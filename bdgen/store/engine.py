"""Engines: how to talk to one database safely under concurrency.

Which database is the caller's choice (the pipeline resolves ``--db``, ``$BDGEN_DB_URL`` and
the workspace; see :mod:`bdgen.pipeline.store`); this module turns a URL or a file path
into an engine. SQLite connections get WAL, a busy timeout and ``BEGIN IMMEDIATE`` for
every writing transaction: a deferred ``BEGIN`` that later writes fails at once with
"database is locked" when another writer holds the lock, whatever the busy timeout
(docs/PLATFORM.md, "SQLite under concurrent writers").
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Select, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import NullPool

from bdgen.errors import BdgenError

SQLITE_BUSY_TIMEOUT_MS = 60_000
#: Execution option marking a connection/session as read-only (SQLite: deferred BEGIN).
READONLY_OPTION = "bdgen_readonly"


def as_url(db: str) -> str:
    """The SQLAlchemy URL of ``db``: a URL as it is, a file path as a SQLite URL."""
    if "://" in db:
        return db
    return f"sqlite:///{Path(db).expanduser().resolve()}"


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return re.sub(r"//([^:/@]*):[^@/]*@", r"//\1:***@", url)


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL (None for other backends and in-memory ones)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite" or not parsed.database or \
            parsed.database == ":memory:":
        return None
    return Path(parsed.database.removeprefix("file:"))


def missing_store_error(url: str) -> BdgenError:
    return BdgenError(f"store {redact(url)} does not exist (a mistyped --db?); "
                      "`bdgen init` or `bdgen db upgrade --db ...` creates one")


def make_engine(url: str, *, readonly: bool = False) -> Engine:
    """An engine for ``url`` with the per-backend connection settings applied.

    ``readonly`` (read commands): a SQLite store is opened with ``mode=ro``, so it works
    in a read-only workspace and can never be written, and a missing file is an error
    (nothing is created); ``immutable=1`` is added when its directory is not writable
    (no ``-shm`` file can be made there: nobody can be writing it).
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:  # ValueError: e.g. a non-numeric port
        why = f" ({str(exc).splitlines()[0]})" if isinstance(exc, ValueError) else ""
        raise BdgenError(f"invalid database URL {redact(url)!r}{why}") from None
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database
        if db and db != ":memory:":
            parent = Path(db).parent
            if not parent.is_dir():
                raise BdgenError(f"cannot open store {redact(url)}: directory {parent} "
                                 "does not exist")
            if readonly:
                path = Path(db).resolve()
                if not path.is_file():
                    raise missing_store_error(url)
                flags = "mode=ro" if os.access(path.parent, os.W_OK) else "mode=ro&immutable=1"
                url = f"sqlite:///file:{path}?{flags}&uri=true"
        # NullPool: connections are cheap for SQLite and a pooled connection must never
        # be shared across a fork.
        engine = create_engine(url, poolclass=NullPool)
        _configure_sqlite(engine, readonly=readonly)
        return engine
    try:
        if parsed.get_backend_name() == "postgresql":
            return create_engine(url, pool_pre_ping=True,
                                 connect_args={"connect_timeout": 10})
        return create_engine(url)
    except Exception as exc:  # missing driver etc.
        raise BdgenError(f"cannot use database URL {redact(url)}: "
                         f"{str(exc).splitlines()[0]}") from None


def _set_wal(cur: Any) -> None:
    """``PRAGMA journal_mode = WAL``, retried while SQLite answers "database is locked".

    Why retry: on a brand-new file several processes opening the store at once all switch
    it from the rollback journal to WAL. The switch reads the header under a SHARED lock and
    then needs the write lock; when another process holds that lock and waits for our
    SHARED lock to go, SQLite returns SQLITE_BUSY at once instead of calling the busy
    handler (it would be a deadlock; sqlite3_busy_handler's documentation). Backing off and
    trying again lets the other process finish; once the file is in WAL the pragma only
    reads. Bounded by the busy timeout, so a store that stays locked still fails.
    """
    import sqlite3
    import time

    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    delay = 0.01
    while True:
        try:
            cur.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def _configure_sqlite(engine: Engine, readonly: bool = False) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:
        # Take transaction control away from pysqlite so that we can emit BEGIN IMMEDIATE.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        if not readonly:  # setting the journal mode writes the header
            _set_wal(cur)
            cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute("PRAGMA foreign_keys = ON")
        # Large aggregate reads (the leaderboard over the whole store): memory-mapped I/O and
        # a 64 MiB page cache instead of the 2 MiB default.
        cur.execute("PRAGMA mmap_size = 268435456")
        cur.execute("PRAGMA cache_size = -65536")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:
        # Writers take the lock up front; explicitly read-only work may stay deferred.
        ro = readonly or conn.get_execution_options().get(READONLY_OPTION, False)
        conn.exec_driver_sql("BEGIN" if ro else "BEGIN IMMEDIATE")


def bulk_insert(conn: Connection, table: str, columns: Sequence[str],
                rows: Sequence[tuple]) -> None:
    """Insert many rows in the connection's transaction, bypassing per-row statement work:
    COPY on PostgreSQL, a plain DBAPI executemany elsewhere (bulk ingest, summaries)."""
    if not rows:
        return
    cols = ", ".join(columns)
    if conn.dialect.name == "postgresql":
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        with cursor.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return
    marks = ", ".join("?" if conn.dialect.paramstyle == "qmark" else "%s" for _ in columns)
    conn.exec_driver_sql(f"INSERT INTO {table} ({cols}) VALUES ({marks})", list(rows))


def fetch_all(conn: Connection, query: Select) -> list[tuple]:
    """All rows of ``query`` as plain DBAPI tuples, in the connection's transaction (no Row
    objects: twice as fast over ~10^5 rows). Only for queries whose parameters and columns
    need no type processing (integers, floats, strings)."""
    compiled = query.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params: Any = compiled.params
    if compiled.positional:
        params = tuple(params[k] for k in compiled.positiontup or ())
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(str(compiled), params)
        return list(cursor.fetchall())
    finally:
        cursor.close()


def configure_mappers_now() -> None:
    """Configure every SQLAlchemy mapper imported so far (the store's models, and MLflow's
    store's if it is imported), in memory. SQLAlchemy otherwise does this at a process's
    first query (~0.45 s here); the warm stage server (:mod:`bdgen.pipeline.stage_server`)
    does it once, so that the stages it forks do not."""
    from sqlalchemy.orm import configure_mappers

    configure_mappers()
