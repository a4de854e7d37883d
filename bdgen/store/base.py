"""Opening a store and its transactions: what every part of :class:`~bdgen.store.api.Store`
builds on."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Engine, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from bdgen.errors import BdgenError
from bdgen.store import migrate
from bdgen.store.engine import (
    READONLY_OPTION,
    as_url,
    make_engine,
    missing_store_error,
    redact,
)

RowT = TypeVar("RowT")
StoreT = TypeVar("StoreT", bound="StoreBase")


def _first_line(exc: BaseException) -> str:
    msg = str(getattr(exc, "orig", exc)).strip().splitlines()
    return msg[0] if msg else type(exc).__name__


class StoreBase:
    """One database: an engine, write and read sessions. Open with :meth:`open`."""

    def __init__(self, engine: Engine, url: str):
        self.engine = engine
        self.url = url
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._metric_pks: dict[str, int] = {}

    @classmethod
    def open(cls: type[StoreT], url: str, *, upgrade: bool = True,
             readonly: bool = False) -> StoreT:
        """Open the store at ``url`` (a SQLAlchemy URL or a SQLite file path), creating or
        upgrading its schema (``upgrade=True``).

        ``readonly`` (read commands): the store must exist (a missing SQLite file or an
        empty database is an error, nothing is created) and SQLite is opened ``mode=ro``.
        A store at an older revision is still upgraded first, through a separate writable
        connection (an error naming ``bdgen db upgrade`` if it cannot be written).

        Which store to use (``--db``, ``$BDGEN_DB_URL``, the workspace's ``bdgen.db``) is
        decided above the store: :func:`bdgen.pipeline.store.store_url`.

        Raises :class:`BdgenError` when the database cannot be reached, or is at a schema
        revision this code does not know (nothing is written then).
        """
        if not isinstance(url, str) or not url:
            raise BdgenError("no store given: pass a database URL or a SQLite file path "
                             "(bdgen.pipeline.store.store_url resolves the default)")
        url = as_url(url)
        if readonly:
            return cls._open_readonly(url, upgrade)
        engine = make_engine(url)
        try:
            if upgrade:
                migrate.ensure_current(engine)
            else:
                with engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
        except (OperationalError, DBAPIError) as exc:
            engine.dispose()
            msg = str(getattr(exc, "orig", exc)).strip().splitlines()
            raise BdgenError(f"cannot open store {redact(url)}: "
                             f"{msg[0] if msg else type(exc).__name__}") from None
        except BaseException:
            engine.dispose()
            raise
        return cls(engine, url)

    @classmethod
    def _open_readonly(cls: type[StoreT], url: str, upgrade: bool) -> StoreT:
        engine = make_engine(url, readonly=True)
        try:
            state = migrate.state(engine)
            if state == "empty":
                raise missing_store_error(url)
            if state == "stale" and upgrade:  # an older store: upgrade it (writable engine)
                writer = make_engine(url)
                try:
                    migrate.ensure_current(writer)
                except (OperationalError, DBAPIError) as exc:
                    raise BdgenError(
                        f"store {redact(url)} is at an older schema revision and cannot be "
                        f"upgraded here ({_first_line(exc)}); run `bdgen db upgrade` where "
                        "it is writable") from None
                finally:
                    writer.dispose()
        except (OperationalError, DBAPIError) as exc:
            engine.dispose()
            raise BdgenError(f"cannot open store {redact(url)}: {_first_line(exc)}") from None
        except BaseException:
            engine.dispose()
            raise
        return cls(engine, url)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self: StoreT) -> StoreT:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A write transaction (SQLite: ``BEGIN IMMEDIATE``): commit on success, else roll
        back."""
        with self._sessions() as s, s.begin():
            yield s

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """A read-only session (SQLite: deferred ``BEGIN``, so it never waits for writers)."""
        with self._sessions() as s:
            s.connection(execution_options={READONLY_OPTION: True})
            yield s  # closing the session ends (rolls back) the read transaction

    @staticmethod
    def _get_or_create(s: Session, cls: type[RowT], key: dict[str, Any],
                       values: dict[str, Any]) -> RowT:
        """Row of ``cls`` matching ``key``, inserting it with ``values`` if absent; safe
        against a concurrent insert of the same key (savepoint + re-read)."""
        row = s.scalars(select(cls).filter_by(**key)).one_or_none()
        if row is not None:
            return row
        try:
            with s.begin_nested():
                row = cls(**key, **values)
                s.add(row)
        except IntegrityError:
            row = s.scalars(select(cls).filter_by(**key)).one()
        return row

