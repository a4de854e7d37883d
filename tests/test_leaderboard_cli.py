"""``bdgen leaderboard|compare|report|check`` on real stores (SQLite): the imported legacy
results, and a small store with known values."""

from __future__ import annotations

import csv
import io
import json
import os
import re

import pytest
from _store_support import known_store
from click.testing import CliRunner

from bdgen.cli.main import cli

TSW1 = "llada_topp0.9_remdm_confidence_tsw1.0"
NOREMASK = "llada_topp0.9_no_remask"


@pytest.fixture(scope="module")
def legacy_db(tmp_path_factory, legacy_dir) -> str:
    from bdgen.store.api import Store

    path = str(tmp_path_factory.mktemp("lb") / "legacy.db")
    store = Store.open(path)
    try:
        reports = store.import_result_files([legacy_dir])
    finally:
        store.close()
    assert sum(r.status == "added" for r in reports) == 22
    return path


@pytest.fixture(scope="module")
def known_db(tmp_path_factory) -> str:
    """Two models x one method, three seeds each, with hand-picked values."""
    return known_store(str(tmp_path_factory.mktemp("known") / "known.db"),
                       {"mA": [0.70, 0.71, 0.72], "mB": [0.80, 0.81, 0.82]})


def run(*args, code: int = 0) -> str:
    res = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert res.exit_code == code, res.output
    return res.output


def lb_json(db: str, *args) -> dict:
    return json.loads(run("leaderboard", "--db", db, "--format", "json", *args))


def test_leaderboard_preferred_json(legacy_db):
    doc = lb_json(legacy_db)
    rows = doc["rows"]
    assert doc["profile"] == "preferred" and doc["alpha"] == 0.05
    # every constraint is checked by the ranking (the same count in every view)
    assert len(rows) == 10 and len(doc["excluded"]) == 12
    assert doc["excluded_by"] == {"inside_validity >= 0.93": 10, "unmasking == llada": 11,
                                  "top_p == 0.9": 2}
    assert rows[0]["method"] == TSW1 and rows[0]["rank"] == 1
    assert rows[0]["metrics"]["novelty_x_mode_coverage_weighted"]["mean"] == pytest.approx(
        0.7318, abs=1e-4)
    assert rows[0]["seeds"] == [42, 123, 456, 789, 1337]
    assert len(rows[0]["run_ids"]) == 5 and "mlflow_run_ids" in rows[0]
    assert rows[0]["ties"] and rows[0]["decided_by"]


def test_leaderboard_formats(legacy_db):
    table = run("leaderboard", "--db", legacy_db)
    assert "\x1b[" not in table  # not a terminal: no ANSI
    assert table.splitlines()[0].split()[:3] == ["#", "method", "seeds"]
    assert "Novelty x MC (wt.)" in table and TSW1 in table
    md = run("leaderboard", "--db", legacy_db, "--format", "markdown")
    assert re.search(rf"^\| 1 \| {re.escape(TSW1)} \| 5 \| \*\*0\.7318 \+/- 0\.0228\*\*",
                     md, re.M)
    rows = list(csv.DictReader(io.StringIO(run("leaderboard", "--db", legacy_db,
                                               "--format", "csv"))))
    assert len(rows) == 10 and rows[0]["method"] == TSW1
    assert float(rows[0]["inside_validity_mean"]) == pytest.approx(0.933, abs=1e-3)
    assert len(rows[0]["run_ids"].split()) == 5


def test_leaderboard_filters_and_columns(legacy_db):
    doc = lb_json(legacy_db, "--profile", "default", "--where", "unmasking=random",
                  "--where", "strategy=cap")
    assert [r["method"] for r in doc["rows"]] and all(
        r["method"].startswith("random_topp0.9_remdm_cap") for r in doc["rows"])
    assert len(doc["rows"]) == 5
    doc = lb_json(legacy_db, "--profile", "default", "--metric", "node_tv",
                  "--metric", "inside_validity", "--top", "3")
    assert len(doc["rows"]) == 3
    assert list(doc["rows"][0]["metrics"]) == ["node_tv", "inside_validity"]
    assert lb_json(legacy_db, "--min-seeds", "6")["rows"] == []
    assert "(no rows)" in run("leaderboard", "--db", legacy_db, "--min-seeds", "6")
    assert len(lb_json(legacy_db, "--profile", "default", "--where", "num_samples=1000",
                       "--where", "noise_schedule=loglinear")["rows"]) == 22


def test_leaderboard_bad_input(legacy_db):
    out = run("leaderboard", "--db", legacy_db, "--where", "colour=red", code=2)
    assert "unknown key 'colour'" in out and "unmasking" in out and "num_samples" in out
    assert "closest" in run("leaderboard", "--db", legacy_db, "--metric", "nod_tv", code=2)
    assert "unknown profile" in run("leaderboard", "--db", legacy_db, "--profile", "nope",
                                    code=2)


def test_leaderboard_custom_profile_and_expectations(legacy_db, tmp_path):
    prof = tmp_path / "conf.yaml"
    prof.write_text("name: conf\nconstraints: ['strategy == confidence']\n"
                    "priorities: [inside_validity]\n")
    doc = lb_json(legacy_db, "--profile", str(prof), "--expect", "v2_remasking")
    assert doc["profile"] == "conf" and len(doc["rows"]) == 8
    assert doc["rows"][0]["method"] == "llada_topp0.9_remdm_confidence_tsw0.3"  # 95.9 %
    assert doc["rows"][0]["verdicts"]["inside_validity"] == "pass"
    assert doc["rows"][0]["verdicts"]["edge_js"] == "fail"
    assert "verdict" in run("leaderboard", "--db", legacy_db, "--expect", "v2_remasking")


def test_compare(legacy_db, legacy_dir):
    from _result_files import load_legacy_dir

    doc = json.loads(run("compare", NOREMASK, TSW1, "--db", legacy_db, "--format", "json"))
    by = {m["metric"]: m for m in doc["metrics"]}
    files = {r.method: r for r in load_legacy_dir(legacy_dir)}
    for name in ("inside_validity", "num_sample_modes", "node_tv", "conditional_edge_tv_weighted"):
        want = files[TSW1].metrics[name].mean - files[NOREMASK].metrics[name].mean
        assert by[name]["deltas"][0]["delta"] == pytest.approx(want, abs=1e-12)
    assert by["inside_validity"]["deltas"][0]["significant"] is True       # 99.4 vs 93.3 %
    assert by["degree_tv_per_type_weighted"]["deltas"][0]["significant"] is False
    groups = list(dict.fromkeys(m["group"] for m in doc["metrics"]))
    assert groups == ["validity", "coverage", "distribution", "graph_structure", "conditional",
                      "denoising"]
    table = run("compare", NOREMASK, TSW1, "--db", legacy_db)
    assert "[Validity]" in table and "-6.1% *" in table and "Welch" in table


def test_compare_unknown_name(legacy_db):
    out = run("compare", "llada_topp0.9_no_remsk", TSW1, "--db", legacy_db, code=2)
    assert "unknown method or model 'llada_topp0.9_no_remsk'" in out
    assert "closest known: llada_topp0.9_no_remask" in out


def test_known_values_store_two_models(known_db, tmp_path):
    out = run("compare", NOREMASK, TSW1, "--db", known_db, code=2)
    assert "ambiguous" in out and f"mA/{NOREMASK}" in out
    doc = json.loads(run("compare", f"mA/{NOREMASK}", f"mB/{NOREMASK}", "--db", known_db,
                         "--format", "json", "--metric", "inside_validity"))
    (m,) = doc["metrics"]
    assert [v["mean"] for v in m["values"]] == pytest.approx([0.71, 0.81])
    assert m["deltas"][0]["delta"] == pytest.approx(0.10)
    assert m["deltas"][0]["significant"] is True
    prof = tmp_path / "iv.yaml"
    prof.write_text("priorities: [inside_validity]\n")
    doc = lb_json(known_db, "--profile", str(prof))
    assert [r["model"] for r in doc["rows"]] == ["mB", "mA"]
    assert doc["rows"][0]["ties"] == []  # 0.81 vs 0.71, sd 0.01: clearly apart
    doc = lb_json(known_db, "--profile", str(prof), "--model", "mA")
    assert [r["model"] for r in doc["rows"]] == ["mA"]
    # the default profile gates on validity_rate, which this store never measured
    assert len(lb_json(known_db, "--profile", "default")["excluded"]) == 2


@pytest.mark.parametrize("profile, where", [("preferred", ()), ("default", ()),
                                            ("default", ("top_p=0.9",))])
def test_leaderboard_from_summaries_equals_the_per_seed_path(legacy_db, known_db, profile,
                                                             where):
    """The leaderboard ranks from the store's summaries; output identical to ranking the
    per-seed values (same aggregates, same Welch p-values, same composite spread)."""
    from bdgen.pipeline.views import load_results
    from bdgen.report.profiles import load_profile
    from bdgen.report.ranking import rank
    from bdgen.report.tables import leaderboard_table, render

    prof = load_profile(profile)
    for db in (legacy_db, known_db):
        out = []
        for per_seed in (True, False):
            res = load_results(db, (), where, 1, metrics=prof.metrics,
                               per_seed=per_seed)
            assert all(a.values for r in res for a in r.metrics.values()) == per_seed
            table = leaderboard_table(rank(res, prof))
            out.append((render(table, "json"), render(table, "table")))
        assert out[0] == out[1]


def test_check(legacy_db, tmp_path):
    out = run("check", "--db", legacy_db, "--expect", "v2_remasking", TSW1, code=1)
    assert re.search(r"pass\s+Inside validity\s+93\.3 \+/- 0\.5%", out)
    assert re.search(r"fail\s+Edge JS\s+0\.2038 \+/- 0\.0025", out)
    easy = tmp_path / "easy.yaml"
    easy.write_text("metrics:\n  inside_validity: {success: '>= 0.9', failure: '< 0.5'}\n")
    out = run("check", "--db", legacy_db, "--expect", str(easy), TSW1, NOREMASK)
    assert out.count("pass") == 2
    run_id = lb_json(legacy_db)["rows"][0]["run_ids"]["42"]
    doc = json.loads(run("check", "--db", legacy_db, "--expect", str(easy), run_id,
                         "--format", "json"))
    assert doc[0]["label"].endswith(f"{TSW1}@run{run_id}")
    assert doc[0]["verdicts"]["inside_validity"]["n"] == 1


def test_report_legacy_reproduces_comparison_md(legacy_db, legacy_dir, tmp_path):
    out = run("report", "--db", legacy_db, "--out", str(tmp_path), "--legacy", "--no-html")
    assert out.strip() == str(tmp_path / "comparison.md")
    got = (tmp_path / "comparison.md").read_text()
    with open(os.path.join(legacy_dir, "comparison.md")) as f:
        ref = f.read()
    strip = re.compile(r"^\*\*Generated\*\*: .*$", re.M)
    assert strip.sub("", got) == strip.sub("", ref)
    assert os.listdir(tmp_path) == ["comparison.md"]


def test_report_on_empty_store_is_an_error(tmp_path):
    from bdgen.store.api import Store

    out = run("report", "--db", str(tmp_path / "missing.db"), "--out", str(tmp_path / "r"),
              code=2)  # a store that does not exist is not created (issue 14)
    assert "does not exist" in out and not (tmp_path / "missing.db").exists()
    Store.open(str(tmp_path / "empty.db")).close()
    out = run("report", "--db", str(tmp_path / "empty.db"), "--out", str(tmp_path / "r"),
              code=2)
    assert "no results" in out and not (tmp_path / "r").exists()
