"""Alembic environment for the bdgen results store.

Run through :mod:`bdgen.store.migrate` (``bdgen db upgrade|current|downgrade``), which hands
in an open connection inside its own transaction. Plain ``alembic`` also works with
``-x url=<SQLAlchemy URL or SQLite path>`` (or ``$BDGEN_DB_URL``), e.g. for ``alembic
revision --autogenerate``. ``render_as_batch`` lets later ALTERs work on SQLite.
"""

from __future__ import annotations

import os

from alembic import context

from bdgen.store.models import Base

target_metadata = Base.metadata


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=True, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    from bdgen.errors import BdgenError
    from bdgen.store.engine import as_url, make_engine

    url = context.get_x_argument(as_dictionary=True).get("url") or os.environ.get("BDGEN_DB_URL")
    if not url:
        raise BdgenError("alembic: pass -x url=<database URL> or set BDGEN_DB_URL")
    engine = make_engine(as_url(url))
    with engine.connect() as conn:
        _run(conn)
        conn.commit()
