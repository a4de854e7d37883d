"""The results store: SQLAlchemy models, Alembic-managed schema, queries, legacy import.

Entry point: :class:`bdgen.store.api.Store`::

    from bdgen.store.api import Store
    store = Store.open(db)   # db: URL or SQLite path; None -> $BDGEN_DB_URL -> workspace bdgen.db

Modules:

* :mod:`~bdgen.store.models`  schema (typed ORM); see its docstring for the identities
* :mod:`~bdgen.store.engine`  URL resolution, SQLite WAL/busy-timeout/BEGIN IMMEDIATE
* :mod:`~bdgen.store.migrate` Alembic upgrade/downgrade/current, version checks, registry sync
* :mod:`~bdgen.store.api`     recording runs, ``method_results``, ``per_seed_values``
* :mod:`~bdgen.store.queries` results and aggregates over seeds (per-seed values or summaries)
* :mod:`~bdgen.store.summaries` ``metric_summaries``: derived per-series aggregates, kept exact
* :mod:`~bdgen.store.legacy_import` ``bdgen import-legacy``
"""
