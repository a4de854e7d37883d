"""Schema, migrations, version checks, connection settings and the ``bdgen db`` commands."""
# ruff: noqa: F811  (pytest fixtures imported from _store_support are redefined as arguments)

from __future__ import annotations

import pytest
from _store_support import store, store_url  # noqa: F401  (fixtures)
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import inspect, select, text

from bdgen.cli.main import cli
from bdgen.errors import BdgenError
from bdgen.eval.registry import METRICS
from bdgen.pipeline.store import open_store
from bdgen.store import migrate
from bdgen.store.api import Store
from bdgen.store.engine import make_engine
from bdgen.store.models import Base, MetricDefinition

TABLES = {"datasets", "models", "methods", "series", "generation_runs", "evaluation_runs",
          "metric_values", "metric_definitions", "denoising_evaluations", "denoising_values",
          "store_meta", "metric_summaries"}


def test_open_creates_schema_at_head_matching_the_models(store_url):
    store = Store.open(store_url)
    try:
        assert migrate.current_revision(store.engine) == migrate.head_revision()
        with store.engine.connect() as conn:
            assert set(inspect(conn).get_table_names()) >= TABLES
            diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diffs == [], "migrations/ and bdgen/store/models.py disagree"
    finally:
        store.close()


def test_metric_definitions_mirror_the_registry(store):
    with store.read_session() as s:
        rows = {r.name: r for r in s.scalars(select(MetricDefinition))}
    assert set(rows) == set(METRICS)
    for name, d in METRICS.items():
        r = rows[name]
        assert (r.legacy_key, r.group, r.direction, r.primary, r.displayed, r.display,
                r.percent, r.description) == (d.legacy_key, d.group, d.direction, d.primary,
                                              d.displayed, d.display, d.percent, d.description)


def test_downgrade_to_base_then_open_upgrades_again(store_url):
    engine = make_engine(store_url)
    try:
        migrate.upgrade(engine)
        assert migrate.downgrade(engine, "base") is None
        with engine.connect() as conn:
            assert not (TABLES & set(inspect(conn).get_table_names()))
    finally:
        engine.dispose()
    store = Store.open(store_url)  # an older (empty) schema is upgraded on first use
    try:
        assert migrate.current_revision(store.engine) == migrate.head_revision()
        assert store.counts()["metric_definitions"] == len(METRICS)
    finally:
        store.close()


def test_newer_database_is_refused_without_writes(store_url):
    Store.open(store_url).close()
    engine = make_engine(store_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'f00dfeed9999'"))
        conn.execute(text("DELETE FROM metric_definitions WHERE name = 'node_js'"))
    with pytest.raises(BdgenError, match="newer bdgen"):
        Store.open(store_url)
    with pytest.raises(BdgenError, match="unknown to this bdgen"):
        migrate.upgrade(engine)
    with engine.connect() as conn:  # untouched: no re-sync of the deleted definition
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() \
            == "f00dfeed9999"
        assert conn.execute(text(
            "SELECT count(*) FROM metric_definitions WHERE name = 'node_js'")).scalar() == 0
    engine.dispose()
    result = CliRunner().invoke(cli, ["db", "current", "--db", store_url])
    assert result.exit_code == 0 and "UNKNOWN revision" in result.output


def test_sqlite_connections_use_wal_and_busy_timeout(tmp_path):
    store = Store.open(str(tmp_path / "x.db"))  # a plain path works too
    try:
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        store.close()


@pytest.mark.parametrize("url, needle", [
    ("postgresql+psycopg://nobody@127.0.0.1:1/nothing", "127.0.0.1:1"),
    ("sqlite:////nonexistent-dir-bdgen/x.db", "nonexistent-dir-bdgen"),
    ("nosuchdialect://x/y", "nosuchdialect"),
])
def test_unreachable_database_is_a_clear_one_line_error(url, needle):
    with pytest.raises(BdgenError) as info:
        Store.open(url)
    msg = str(info.value)
    assert needle in msg and "\n" not in msg


def test_db_commands(store_url):
    runner = CliRunner()
    r = runner.invoke(cli, ["db", "current", "--db", store_url])
    if store_url.startswith("sqlite"):  # a read command creates no store (issue 14)
        assert r.exit_code == 2 and "does not exist" in r.output, r.output
    else:  # an existing, empty database
        assert r.exit_code == 0, r.output
        assert "revision none" in r.output
    r = runner.invoke(cli, ["db", "upgrade", "--db", store_url])
    assert r.exit_code == 0, r.output
    assert migrate.head_revision() in r.output
    r = runner.invoke(cli, ["db", "current", "--db", store_url])
    assert "up to date" in r.output
    r = runner.invoke(cli, ["db", "downgrade", "base", "--db", store_url])
    assert r.exit_code == 0 and "base" in r.output, r.output
    r = runner.invoke(cli, ["db", "upgrade", "nosuchrev", "--db", store_url])
    assert r.exit_code == 2 and "error:" in r.output


def test_db_url_from_environment(tmp_path, monkeypatch):
    # BDGEN_DB_URL selects the store when --db is absent (environment, not a mock).
    url = f"sqlite:///{tmp_path / 'env.db'}"
    monkeypatch.setenv("BDGEN_DB_URL", url)
    r = CliRunner().invoke(cli, ["db", "upgrade"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "env.db").exists()


def test_default_store_is_the_workspace_file(tmp_path, monkeypatch):
    (tmp_path / "bdgen.toml").write_text("")
    monkeypatch.delenv("BDGEN_DB_URL", raising=False)
    monkeypatch.setenv("BDGEN_WORKSPACE", str(tmp_path))
    open_store().close()
    assert (tmp_path / "bdgen.db").exists()
