"""The results store: SQLAlchemy models, Alembic-managed schema, recording and queries.

Entry point: :class:`bdgen.store.api.Store`::

    from bdgen.store.api import Store
    store = Store.open(url)   # a SQLAlchemy URL or a SQLite file path

Which store a command uses (``--db``, ``$BDGEN_DB_URL``, the workspace's ``bdgen.db``) is
decided in the pipeline (:func:`bdgen.pipeline.store.store_url`), so the store never looks
for a workspace. See :mod:`bdgen.store.api` for the modules ``Store`` is assembled from;
besides them: :mod:`~bdgen.store.models` (schema), :mod:`~bdgen.store.engine` (engines,
SQLite settings), :mod:`~bdgen.store.migrate` (Alembic), :mod:`~bdgen.store.summaries`
(derived per-series aggregates), :mod:`~bdgen.store.queries` (filters, aggregates).
"""
