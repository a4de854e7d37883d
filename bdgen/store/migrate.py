"""Schema versions: programmatic Alembic upgrade / downgrade / current, with version checks.

Alembic is configured in code (no ``alembic.ini`` needed at run time): ``script_location`` is
the package's own ``bdgen/store/migrations/`` folder, so an installed wheel can create and
upgrade stores. The check and
the upgrade run in one write transaction (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: a
transaction-scoped advisory lock), so several processes opening a new store at once migrate
it exactly once. A database stamped with a revision this code does not know (written by a
newer bdgen) is refused before anything is written.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, inspect, select, text

from bdgen.errors import BdgenError
from bdgen.store.engine import READONLY_OPTION, redact
from bdgen.store.schema import MIGRATIONS_DIR
from bdgen.store.schema import head_revision as scripts_head

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic (~0.4 s to import) is imported inside the functions that need it: opening a store
# that is already current reads its revision with plain SQL (:func:`ensure_current`).
_PG_LOCK_KEY = 0x6264_6765  # "bdge": advisory lock serialising migrations on PostgreSQL
_FINGERPRINT_KEY = "metric_registry_sha256"


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config pointing at ``migrations/``, optionally bound to ``connection``."""
    if not (MIGRATIONS_DIR / "env.py").is_file():
        raise BdgenError(f"migrations folder not found at {MIGRATIONS_DIR} "
                         "(a broken bdgen installation: reinstall it)")
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    return {s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions()}


def _current(conn: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


def _current_sql(conn: Connection) -> str | None:
    """The stamped revision read with plain SQL (no Alembic import); None if unstamped or
    stamped with several heads (Alembic then decides)."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    rows = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    return rows[0] if len(rows) == 1 else None


def current_revision(engine: Engine) -> str | None:
    """The database's revision (``None`` for an empty database)."""
    with engine.connect().execution_options(**{READONLY_OPTION: True}) as conn:
        return _current(conn)


def _check_known(rev: str | None, engine: Engine) -> None:
    if rev is not None and rev not in known_revisions():
        raise BdgenError(
            f"store {redact(str(engine.url))} is at schema revision {rev!r}, unknown to this "
            f"bdgen (head {head_revision()!r}); it was written by a newer bdgen: upgrade bdgen")


def _lock(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})


def registry_fingerprint() -> str:
    from bdgen.eval.registry import METRICS

    rows = [_definition_row(m) for m in METRICS.values()]
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


def _definition_row(m) -> dict:
    return {"name": m.name, "legacy_key": m.legacy_key, "group": m.group,
            "direction": m.direction, "primary": m.primary, "displayed": m.displayed,
            "display": m.display, "percent": m.percent, "description": m.description}


def sync_metric_definitions(conn: Connection) -> None:
    """Mirror the code registry into ``metric_definitions`` (insert new, update changed)."""
    from bdgen.eval.registry import METRICS
    from bdgen.store.models import MetricDefinition, StoreMeta, table

    defs = table(MetricDefinition)
    existing = {r.name: r for r in conn.execute(select(defs))}
    cols = {a.key: a.columns[0].name for a in MetricDefinition.__mapper__.column_attrs}
    for m in METRICS.values():
        row = _definition_row(m)
        db_row = {cols[k]: v for k, v in row.items()}
        old = existing.get(m.name)
        if old is None:
            conn.execute(defs.insert().values(**db_row))
        elif any(getattr(old, cols[k]) != v for k, v in row.items()):
            conn.execute(defs.update().where(defs.c.name == m.name).values(**db_row))
    meta = table(StoreMeta)
    fp = registry_fingerprint()
    conn.execute(meta.delete().where(meta.c.key == _FINGERPRINT_KEY))
    conn.execute(meta.insert().values(key=_FINGERPRINT_KEY, value=fp))


def _fingerprint(conn: Connection) -> str | None:
    if not inspect(conn).has_table("store_meta"):
        return None
    return conn.execute(text("SELECT value FROM store_meta WHERE key = :k"),
                        {"k": _FINGERPRINT_KEY}).scalar()


@contextmanager
def _schema_transaction(engine: Engine) -> Iterator[Connection]:
    """A write transaction for schema changes. On SQLite, foreign keys are off while it
    runs (checked with ``foreign_key_check`` before commit): batch migrations recreate a
    table (copy, drop, rename), and dropping a referenced table with foreign keys on fails,
    or cascades into its children. SQLite ignores the pragma inside a transaction, so it is
    set on the DBAPI connection before the transaction begins."""
    with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            _sqlite_pragma(conn, "PRAGMA foreign_keys = OFF")
        try:
            with conn.begin():
                yield conn
                if sqlite:
                    bad = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if bad:
                        raise BdgenError(f"schema change left {len(bad)} broken foreign "
                                         f"key(s), e.g. in table {bad[0][0]}; rolled back")
        finally:
            if sqlite:
                _sqlite_pragma(conn, "PRAGMA foreign_keys = ON")


def _sqlite_pragma(conn: Connection, sql: str) -> None:
    cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cur.execute(sql)
    finally:
        cur.close()


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Upgrade to ``revision`` (default head) and sync metric definitions; returns the new
    revision. Refuses a database at an unknown revision."""
    with _schema_transaction(engine) as conn:
        _lock(conn)
        cur = _current(conn)
        _check_known(cur, engine)
        _refuse_backwards(cur, revision, engine)
        from alembic import command
        from alembic.util.exc import CommandError

        try:
            command.upgrade(alembic_config(conn), revision)
        except CommandError as exc:
            raise BdgenError(f"cannot upgrade to {revision!r}: {exc}") from None
        rev = _current(conn)
        if rev == head_revision():
            sync_metric_definitions(conn)
        return rev


def _refuse_backwards(current: str | None, target: str, engine: Engine) -> None:
    """``upgrade`` to a revision older than the store's would silently do nothing."""
    if current is None or target in ("head", "heads", current):
        return
    from alembic.script import ScriptDirectory
    from alembic.util.exc import CommandError

    script = ScriptDirectory.from_config(alembic_config())
    try:
        older = {s.revision for s in script.iterate_revisions(current, "base")} - {current}
    except CommandError:
        return
    if target in older:
        raise BdgenError(f"store {redact(str(engine.url))} is at revision {current!r}, later "
                         f"than {target!r}: `bdgen db upgrade` only moves forward; use "
                         f"`bdgen db downgrade {target}`")


def downgrade(engine: Engine, revision: str = "-1") -> str | None:
    """Downgrade to ``revision`` (``-1`` = one step, ``base`` = empty database)."""
    with _schema_transaction(engine) as conn:
        _lock(conn)
        cur = _current(conn)
        _check_known(cur, engine)
        if cur is None:
            raise BdgenError(f"store {redact(str(engine.url))} has no schema to downgrade")
        from alembic import command
        from alembic.util.exc import CommandError

        try:
            command.downgrade(alembic_config(conn), revision)
        except CommandError as exc:
            raise BdgenError(f"cannot downgrade to {revision!r}: {exc}") from None
        return _current(conn)


def state(engine: Engine) -> str:
    """``"empty"`` (no schema), ``"current"`` (head, registry synced) or ``"stale"``
    (older revision or registry changed: :func:`ensure_current` has work); reads only.
    Refuses a revision this code does not know."""
    with engine.connect().execution_options(**{READONLY_OPTION: True}) as conn:
        rev = _current(conn)
        _check_known(rev, engine)
        if rev is None:
            return "empty"
        return "current" if rev == head_revision() and \
            _fingerprint(conn) == registry_fingerprint() else "stale"


def ensure_current(engine: Engine) -> None:
    """Make a new or older store usable by this code; refuse a newer one (no writes).

    Cheap when nothing is to do: one read of the revision and the registry fingerprint.
    """
    with engine.connect().execution_options(**{READONLY_OPTION: True}) as conn:
        rev = _current_sql(conn)
        if rev is not None and rev == scripts_head() and \
                _fingerprint(conn) == registry_fingerprint():
            return  # the usual case, without importing Alembic
    from alembic import command

    head = head_revision()
    with engine.connect().execution_options(**{READONLY_OPTION: True}) as conn:
        rev = _current(conn)
        _check_known(rev, engine)
        if rev == head and _fingerprint(conn) == registry_fingerprint():
            return
    with _schema_transaction(engine) as conn:
        _lock(conn)
        rev = _current(conn)  # another process may have upgraded meanwhile
        _check_known(rev, engine)
        if rev != head:
            command.upgrade(alembic_config(conn), "head")
        if _fingerprint(conn) != registry_fingerprint():
            sync_metric_definitions(conn)
