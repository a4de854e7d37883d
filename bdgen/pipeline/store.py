"""Which results store a command uses, decided in one place.

First wins: an explicit ``--db`` URL-or-path, ``$BDGEN_DB_URL``, the workspace's
``bdgen.db``. The store package itself only takes a URL (it never looks for a workspace),
which keeps the layers pointing down.
"""

from __future__ import annotations

import os

from bdgen.errors import BdgenError
from bdgen.pipeline.workspace import Workspace
from bdgen.store.api import Store
from bdgen.store.engine import as_url

ENV_DB_URL = "BDGEN_DB_URL"


def store_url(db: str | None = None, workspace: Workspace | None = None) -> str:
    """The SQLAlchemy URL of the store: ``db`` (a URL or a file path), else
    ``$BDGEN_DB_URL``, else ``workspace``'s (or the current workspace's) ``bdgen.db``."""
    db = db or os.environ.get(ENV_DB_URL)
    if db:
        return as_url(db)
    ws = workspace if workspace is not None else Workspace.find()
    return f"sqlite:///{ws.db_path}"


def open_store(db: str | None = None, workspace: Workspace | None = None, *,
               upgrade: bool = True, readonly: bool = False) -> Store:
    """:meth:`Store.open` on :func:`store_url`. ``readonly`` for commands that only read
    (leaderboard, compare, report, check): a store that does not exist is an error (a
    mistyped ``--db`` creates nothing) and SQLite is opened read-only."""
    return Store.open(store_url(db, workspace), upgrade=upgrade, readonly=readonly)


def _connect_error(url: str, exc: Exception) -> BdgenError:
    from bdgen.store.engine import redact

    msg = str(getattr(exc, "orig", exc)).strip().splitlines()
    return BdgenError(f"cannot open store {redact(url)}: {msg[0] if msg else exc}")


def migrate_store(db: str | None, step: str, revision: str) -> tuple[str, str | None]:
    """``bdgen db upgrade|downgrade``: one Alembic step (``step`` names it) on the store;
    returns (redacted URL, revision reached)."""
    from sqlalchemy.exc import DBAPIError

    from bdgen.store import migrate
    from bdgen.store.engine import make_engine, redact

    url = store_url(db)
    engine = make_engine(url)
    try:
        return redact(url), {"upgrade": migrate.upgrade,
                             "downgrade": migrate.downgrade}[step](engine, revision)
    except DBAPIError as exc:
        raise _connect_error(url, exc) from None
    finally:
        engine.dispose()


def revision_state(db: str | None) -> str:
    """``bdgen db current``: the store's revision against the code's, in one line (reads
    only)."""
    from sqlalchemy.exc import DBAPIError

    from bdgen.store import migrate
    from bdgen.store.engine import make_engine, redact

    url = store_url(db)
    engine = make_engine(url, readonly=True)  # a missing SQLite file: error, not created
    try:
        rev = migrate.current_revision(engine)
    except DBAPIError as exc:
        raise _connect_error(url, exc) from None
    finally:
        engine.dispose()
    head = migrate.head_revision()
    if rev is None:
        state = "empty (created on first use)"
    elif rev == head:
        state = "up to date"
    elif rev in migrate.known_revisions():
        state = "older than the code (upgraded on first use)"
    else:
        state = "UNKNOWN revision, newer than this bdgen: refused"
    return f"{redact(url)}: revision {rev or 'none'} (head {head}): {state}"
