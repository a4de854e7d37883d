"""Which results store a command uses, decided in one place.

First wins: an explicit ``--db`` URL-or-path, ``$BDGEN_DB_URL``, the workspace's
``bdgen.db``. The store package itself only takes a URL (it never looks for a workspace),
which keeps the layers pointing down.
"""

from __future__ import annotations

import os

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
