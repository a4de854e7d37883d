"""Bad input through the real ``bdgen`` console script (subprocesses): each case prints one
line on stderr, exits non-zero, shows no traceback, and leaves the store as it was."""

from __future__ import annotations

import os
import resource
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

BDGEN = [sys.executable, "-c", "from bdgen.cli.main import main; main()"]


def _env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": root, "MLFLOW_DISABLE_TELEMETRY": "true",
            "DVC_NO_ANALYTICS": "1", "BDGEN_DEBUG": ""}


def bdgen(*args: str, cwd: Path, limit_bytes: int | None = None):
    def limit() -> None:  # a "full disk": writes beyond this file size fail (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, resource.RLIM_INFINITY))

    return subprocess.run([*BDGEN, *args], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=300, preexec_fn=limit if limit_bytes else None)


def row_counts(db: Path) -> dict[str, int]:
    con = sqlite3.connect(db)
    try:
        names = [r[0] for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {n: con.execute(f'SELECT COUNT(*) FROM "{n}"').fetchone()[0] for n in names}
    finally:
        con.close()


@pytest.fixture(scope="module")
def store(tmp_path_factory, legacy_dir) -> Path:
    """A store with the 22 legacy results, and a folder to run commands in."""
    from bdgen.store.api import Store

    root = tmp_path_factory.mktemp("bad")
    with Store.open(str(root / "s.db")) as s:
        s.import_result_files([legacy_dir])
    (root / "latin1.yaml").write_bytes("name: caf\xe9\npriorities: [node_tv]\n".encode("latin-1"))
    (root / "p_field.yaml").write_text("priorities:\n  - {metric: node_tv, direction: up}\n")
    (root / "e_field.yaml").write_text("metrics:\n  node_tv: {expect: [0.1]}\n")
    (root / "p_yaml.yaml").write_text("priorities: [node_tv\n")
    return root


CASES = [  # (arguments, a fragment of the one line)
    (["leaderboard", "--db", "postgresql://u:secret@localhost:abc/db"],
     "invalid database URL 'postgresql://u:***@localhost:abc/db'"),
    (["leaderboard", "--db", "s.db", "--profile", "latin1.yaml"],
     "latin1.yaml: cannot read profile: not UTF-8 text"),
    (["leaderboard", "--db", "s.db", "--profile", "p_field.yaml"],
     "p_field.yaml: priorities.0.direction: Input should be 'higher' or 'lower'"),
    (["leaderboard", "--db", "s.db", "--profile", "p_yaml.yaml"], "bad YAML at line 2"),
    (["leaderboard", "--db", "s.db", "--expect", "e_field.yaml"],
     "e_field.yaml: metrics.node_tv.expect.1: Field required"),
    (["report", "--db", "s.db", "--profile", "latin1.yaml", "--out", "rep"], "not UTF-8"),
    (["reprot"], "no such command 'reprot'; did you mean 'report'?"),
    (["leaderboard", "--db", "s.db", "--where", "colour=red"], "unknown key 'colour'"),
    (["leaderboard", "--db", "s.db", "--format", "xml"], "Invalid value for '--format'"),
    (["generate", "--model", "m.pt", "--method", "llada_topp0.9_no_remask",
      "--device", "gpu"], "'gpu' is not a device; use auto, cpu, cuda or cuda:N"),
    (["compare", "--db", "s.db", "llada_topp0.9_no_remask", "nope_method"], "nope_method"),
    (["runs", "--db", "s.db", "--where", "colour=red"], "unknown key 'colour'"),
]


@pytest.mark.parametrize("args, fragment", CASES, ids=[" ".join(c[0][:3]) for c in CASES])
def test_bad_input_is_one_line(store, args, fragment):
    before = row_counts(store / "s.db")
    res = bdgen(*args, cwd=store)
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], \
        res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    assert row_counts(store / "s.db") == before
    assert not (store / "rep").exists()


def test_disk_full_is_one_line_and_writes_nothing(store, legacy_dir, tmp_path):
    """No file may grow past 8 KiB (a file size limit, as a full disk: SQLite's WAL cannot
    be written): the import fails with one line and the store keeps its rows."""
    db = tmp_path / "full.db"
    assert bdgen("db", "upgrade", "--db", str(db), cwd=tmp_path).returncode == 0
    before = row_counts(db)
    res = bdgen("import-legacy", legacy_dir, "--db", str(db), "--no-mlflow", cwd=tmp_path,
                limit_bytes=8192)  # the first transaction cannot land
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and any(f in lines[0] for f in (
        "disk I/O error", "the disk is full", "the disk may be full")), res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    assert row_counts(db) == before


def test_unexpected_error_is_one_line_with_the_debug_hint(monkeypatch):
    """A bug (not a BdgenError) in a command: one line naming it, exit 3; --debug or
    BDGEN_DEBUG=1 shows the traceback."""
    import click

    from bdgen.cli.main import EXIT_UNEXPECTED, LazyGroup

    @click.group(cls=LazyGroup)
    @click.option("--debug", is_flag=True)
    def group(debug: bool) -> None:
        pass

    @group.command()
    def boom() -> None:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.delenv("BDGEN_DEBUG", raising=False)
    res = CliRunner().invoke(group, ["boom"])
    assert res.exit_code == EXIT_UNEXPECTED == 3
    assert res.output == ("error: unexpected RuntimeError: boom "
                          "(run with --debug for the traceback)\n")
    res = CliRunner().invoke(group, ["--debug", "boom"])
    assert isinstance(res.exception, RuntimeError)
    monkeypatch.setenv("BDGEN_DEBUG", "1")
    assert isinstance(CliRunner().invoke(group, ["boom"]).exception, RuntimeError)
