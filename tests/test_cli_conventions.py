"""Command-line conventions (README "Command-line conventions"), through the real CLI."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from bdgen.cli.main import COMMANDS, cli
from bdgen.cli.options import DeviceType

BDGEN = [sys.executable, "-c", "from bdgen.cli.main import main; main()"]
ROOT = Path(__file__).resolve().parents[1]


def sh(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_DISABLE_TELEMETRY": "true", **env}
    return subprocess.run([*BDGEN, *args], cwd=cwd, env=full, capture_output=True, text=True,
                          timeout=300)


def run(*args: str, code: int = 0, columns: str = "") -> str:
    res = CliRunner(env={"COLUMNS": columns}).invoke(cli, list(args), catch_exceptions=False)
    assert res.exit_code == code, res.output
    return res.output


@pytest.fixture
def db(read_only_legacy_db) -> str:
    return read_only_legacy_db  # read only here: the session's shared legacy store


def _all_commands() -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for name in COMMANDS:
        cmd = cli.get_command(click.Context(cli), name)
        out.append((name,))
        if isinstance(cmd, click.Group):
            out += [(name, sub) for sub in cmd.commands]
    return out


def _command(path: tuple[str, ...]) -> click.Command:
    cmd = cli.get_command(click.Context(cli), path[0])
    for part in path[1:]:
        cmd = cmd.commands[part]  # type: ignore[attr-defined]
    return cmd


@pytest.mark.parametrize("path", _all_commands(), ids=" ".join)
def test_dash_h_everywhere(path):
    out = run(*path, "-h")
    assert out.startswith("Usage: ") and out == run(*path, "--help")


def test_top_level_help_version_and_typo():
    assert run("-h") == run("--help")
    from bdgen import __version__
    from bdgen.store import migrate
    from bdgen.store.schema import HEAD_REVISION

    assert migrate.head_revision() == HEAD_REVISION  # the file scan agrees with Alembic
    res = sh("--version")
    assert res.returncode == 0
    assert res.stdout == f"bdgen {__version__} (store schema revision {HEAD_REVISION})\n"
    res = sh("reprot")
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr == "error: no such command 'reprot'; did you mean 'report'? " \
                         "(see 'bdgen -h')\n"


def test_device_is_one_type_in_every_command():
    with_device = [p for p in _all_commands()
                   if any(o.name == "device" for o in _command(p).params)]
    assert {p[0] for p in with_device} >= {"train", "generate", "sweep"}
    for p in with_device:
        (opt,) = [o for o in _command(p).params if o.name == "device"]
        assert isinstance(opt.type, DeviceType), p
    t = DeviceType()
    assert [t.convert(v, None, None) for v in ("auto", "cpu", "cuda", "cuda:3")] == [
        "auto", "cpu", "cuda", "cuda:3"]
    for bad in ("gpu", "cuda:", "cuda:x", "CPU "):
        with pytest.raises(click.BadParameter):
            t.convert(bad, None, None)


TABLE_COMMANDS = [("leaderboard",), ("compare",), ("check",), ("runs",), ("models",),
                  ("evaluate",), ("constraints", "check")]


@pytest.mark.parametrize("path", TABLE_COMMANDS, ids=" ".join)
def test_format_option_on_every_table_command(path):
    (opt,) = [o for o in _command(path).params if o.name == "fmt"]
    assert opt.opts == ["--format"] and list(opt.type.choices) == [
        "table", "markdown", "csv", "json"]


def test_data_stats_json_alias():
    names = {o.name: o for o in _command(("data", "stats")).params}
    assert list(names["fmt"].type.choices) == ["table", "json"] and "as_json" in names


def test_train_defaults_come_from_the_config():
    from bdgen.diffusion.trainer import TrainConfig

    out = run("train", "-h")
    cfg = TrainConfig()
    for flag, value in (("--steps", cfg.steps), ("--batch-size", cfg.batch_size),
                        ("--val-every", cfg.val_every), ("--seed", cfg.seed)):
        block = out[out.index(flag):].split("--", 2)[1]
        assert f"[default: {value}]" in " ".join(block.split()), (flag, block)


def test_tables_fit_the_terminal_at_22_methods(db):
    for args in (["leaderboard"], ["leaderboard", "--profile", "default"],
                 ["compare", "llada_topp0.9_no_remask", "random_topp0.9_no_remask",
                  "llada_topp0.9_remdm_confidence_tsw1.0"], ["runs"]):
        for width in (80, 120):
            out = run(*args, "--db", db, columns=str(width))
            assert max(len(ln) for ln in out.splitlines()) <= width, (args, width)
    wide = run("leaderboard", "--db", db)  # a pipe: whole lines
    assert max(len(ln) for ln in wide.splitlines()) > 120
    narrow = run("leaderboard", "--db", db, columns="80")
    assert "column(s) not shown at width 80" in narrow
    assert "llada_topp0.9_remdm_confidence_tsw1.0" in narrow  # identities never wrapped


def test_constraints_excluding_everything_still_show_ranked_rows(db):
    args = ["leaderboard", "--db", db, "--where", "unmasking=random"]
    doc = json.loads(run(*args, "--profile", "preferred", "--format", "json"))
    assert doc["rows"] == [] and len(doc["ranked_without_constraints"]) == 11
    assert doc["ranked_without_constraints"][0]["fails"] == (
        "inside_validity >= 0.93; unmasking == llada")
    table = run(*args, "--profile", "preferred")
    assert "[no result meets the constraints of profile preferred: ranked without them" \
        in table
    assert table.splitlines()[-1] == ("11 of 11 excluded by constraints (inside_validity "
                                      ">= 0.93: 10, unmasking == llada: 11, top_p == 0.9: 1)")
    # the default ("auto") falls back to the default profile and says so in one line
    doc = json.loads(run(*args, "--format", "json"))
    assert doc["profile"] == "default" and len(doc["rows"]) == 11
    assert doc["notes"] == [
        "no result meets profile preferred's constraints (11 of 11 excluded by constraints "
        "(inside_validity >= 0.93: 10, unmasking == llada: 11, top_p == 0.9: 1)): ranked by "
        "profile default instead (--profile preferred to force it)"]


def test_exclusions_counted_the_same_in_leaderboard_and_report(db, tmp_path):
    line = "12 of 22 excluded by constraints (inside_validity >= 0.93: 10, unmasking == " \
           "llada: 11, top_p == 0.9: 2)"
    assert line in run("leaderboard", "--db", db).splitlines()
    run("report", "--db", db, "--out", str(tmp_path), "--no-html")
    assert f"*{line}*" in (tmp_path / "comparison.md").read_text() or \
        line in (tmp_path / "comparison.md").read_text()


def test_repeated_options_and_the_comma_compatibility_form(db):
    a, b = "llada_topp0.9_no_remask", "random_topp0.9_no_remask"
    rep = run("leaderboard", "--db", db, "--profile", "default", "--where", f"method={a}",
              "--where", f"method={b}", "--format", "csv")
    comma = run("leaderboard", "--db", db, "--profile", "default", "--where",
                f"method={a},{b}", "--format", "csv")
    assert rep == comma and len(list(csv.DictReader(io.StringIO(rep)))) == 2
    assert run("leaderboard", "--db", db, "--metric", "node_tv,edge_tv", "--format",
               "json") == run("leaderboard", "--db", db, "--metric", "node_tv", "--metric",
                              "edge_tv", "--format", "json")


def test_runs_and_models_list_the_store(db, tmp_path):
    rows = list(csv.DictReader(io.StringIO(run(
        "runs", "--db", db, "--where", "seed=42", "--where", "method=llada_topp0.9_no_remask",
        "--format", "csv"))))
    assert [(r["model_id"], r["method"], r["seed"], r["status"], r["evaluation"])
            for r in rows] == [("legacy-v1-loglinear", "llada_topp0.9_no_remask", "42",
                                "succeeded", "succeeded")]
    assert len(json.loads(run("runs", "--db", db, "--format", "json"))) == 110
    assert len(json.loads(run("runs", "--db", db, "--limit", "3", "--format", "json"))) == 3
    (model,) = json.loads(run("models", "--db", db, "--format", "json"))
    assert model["model_id"] == "legacy-v1-loglinear" and model["runs"] == 110
    empty = str(tmp_path / "empty.db")
    assert "does not exist" in run("runs", "--db", empty, code=2)  # a read never creates it
    run("db", "upgrade", "--db", empty)
    assert run("runs", "--db", empty) == (
        "id  model_id  method  seed  num_samples  steps  status  evaluation  started_at\n"
        "--  --------  ------  ----  -----------  -----  ------  ----------  ----------\n"
        "(no rows)\n\n0 generation run(s)\n")


def test_heartbeat_lines_without_a_terminal(caplog):
    """No terminal: a line at least every interval while the job is silent."""
    from bdgen.pipeline.progress import Progress

    caplog.set_level(logging.INFO, logger="bdgen.progress")
    with Progress(4, "evaluate", "run", interval=0.05) as p:
        p.update_to(1, "run 7: m/llada_topp0.9_no_remask/42")
        time.sleep(0.4)  # one slow item, nothing reported by the job
    lines = [r.getMessage() for r in caplog.records if r.name == "bdgen.progress"]
    assert len(lines) >= 3
    assert lines[0].startswith("evaluate: 1/4 run(s) (run 7: m/llada_topp0.9_no_remask/42), ")


def test_disk_full_message_from_a_real_sqlite_error(tmp_path):
    import sqlite3

    from bdgen.cli.failures import describe

    con = sqlite3.connect(tmp_path / "x.db")
    con.execute("CREATE TABLE t (x BLOB)")
    con.execute("PRAGMA max_page_count = 3")
    with pytest.raises(sqlite3.OperationalError) as info:
        con.execute("INSERT INTO t VALUES (zeroblob(100000))")
    assert "database or disk is full" in str(info.value)
    known, line = describe(info.value)
    assert known and line.startswith("the disk is full")


def test_iterate_closes_its_heartbeat_on_break(caplog, monkeypatch):
    import threading

    from bdgen.pipeline.progress import iterate

    monkeypatch.setenv("BDGEN_HEARTBEAT_S", "0.05")
    caplog.set_level(logging.INFO, logger="bdgen.progress")
    before = threading.active_count()
    gen = iterate(["a.pt", "b.pt", "c.pt"], "evaluate", "file")
    for item in gen:
        if item == "b.pt":
            time.sleep(0.25)
            break
    gen.close()
    assert threading.active_count() == before
    assert any("evaluate: 1/3 file(s) (b.pt)" in r.getMessage() for r in caplog.records)


def test_heartbeat_interval_from_the_environment(monkeypatch):
    from bdgen.pipeline.progress import heartbeat_interval

    monkeypatch.setenv("BDGEN_HEARTBEAT_S", "0.5")
    assert heartbeat_interval() == 0.5
    monkeypatch.setenv("BDGEN_HEARTBEAT_S", "x")
    assert heartbeat_interval() == 10.0


def test_report_files_get_the_umask_permissions(db, tmp_path):
    import stat

    def umask_022() -> None:
        os.umask(0o022)

    out = tmp_path / "rep"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_DISABLE_TELEMETRY": "true"}
    res = subprocess.run([*BDGEN, "report", "--db", db, "--out", str(out)], env=env,
                         capture_output=True, text=True, timeout=300, preexec_fn=umask_022)
    assert res.returncode == 0, res.stderr
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert modes == {"comparison.md": 0o644, "comparison.html": 0o644}
