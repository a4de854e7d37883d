"""The results store: SQLAlchemy models, Alembic-managed schema, queries, legacy import.

Public entry point: :class:`bdgen.store.api.Store` (``Store.open(url)``).
"""
