"""Table rendering: best-value highlighting, formats, compare columns (legacy numbers)."""

from __future__ import annotations

import csv
import io
import json

import pytest
from _result_files import load_legacy_dir

from bdgen.errors import BdgenError
from bdgen.report.profiles import load_profile
from bdgen.report.ranking import rank
from bdgen.report.tables import BOLD, compare_table, leaderboard_table, render, resolve_names

A, B, C = ("llada_topp0.9_no_remask", "llada_topp0.9_remdm_confidence_tsw1.0",
           "random_topp0.9_no_remask")


@pytest.fixture(scope="module")
def results(legacy_dir):
    return load_legacy_dir(legacy_dir)


def test_leaderboard_highlights_the_best_value_per_column(results):
    t = leaderboard_table(rank(results, load_profile("preferred")))
    col = t.header.index("Node TV")
    best = [i for i, _ in sorted(t.bold) if _ == col]
    node_tv = {r[1]: r[col] for r in t.rows}
    assert [t.rows[i][1] for i in best] == [A]  # 0.1186, the lowest node TV
    assert node_tv[A] == "0.1186 +/- 0.0027"
    plain, ansi = render(t, "table"), render(t, "table", color=True)
    assert BOLD not in plain and f"{BOLD}0.1186 +/- 0.0027" in ansi
    # colour codes do not break the alignment: same visible layout
    assert [len(x) for x in plain.splitlines()[:2]] == [
        len(x) for x in ansi.replace(BOLD, "").replace("\x1b[0m", "").splitlines()[:2]]
    assert "| **0.1186 +/- 0.0027** |" in render(t, "markdown")


def test_compare_columns_deltas_and_marks(results):
    t = compare_table(resolve_names([A, B, C], results))
    assert t.header == ["Metric", A, B, f"delta {B}", C, f"delta {C}"]
    row = next(r for r in t.rows if r[0] == "Inside validity")
    assert row == ["Inside validity", "99.4 +/- 0.3%", "93.3 +/- 0.5%", "-6.1% *",
                   "84.0 +/- 0.9%", "-15.4% *"]
    i = t.rows.index(row)
    assert (i, 1) in t.bold and (i, 2) not in t.bold and (i, 4) not in t.bold
    rooms = next(r for r in t.rows if r[0] == "Rooms W1")
    assert rooms[3] == "+0"  # identical values: no mark
    assert list(t.groups.values()) == [
        "Validity", "Coverage", "Distribution (Primary: JS / TV / W1)", "Graph Structure",
        "Conditional", "Denoising (Model Quality, Seed-Independent)"]
    flat = list(csv.DictReader(io.StringIO(render(t, "csv"))))
    iv = next(f for f in flat if f["metric"] == "inside_validity")
    assert float(iv[f"{B}_delta"]) == pytest.approx(0.9334 - 0.9936, abs=1e-3)
    doc = json.loads(render(t, "json"))
    assert doc["reference"].endswith(A) and doc["alpha"] == 0.05


def test_compare_primary_only_and_metric_choice(results):
    t = compare_table(resolve_names([A, B], results), primary_only=True)
    assert not any("(diag.)" in r[0] for r in t.rows)
    t = compare_table(resolve_names([A, B], results),
                      metrics=["novelty_x_mode_coverage_weighted", "node_tv"])
    assert [r[0] for r in t.rows] == ["Novelty x MC (wt.)", "Node TV"]


def test_resolve_names(results):
    assert resolve_names([f"{results[0].model}/{A}"], results)[0].method == A
    with pytest.raises(BdgenError, match="closest known: llada_topp0.9_no_remask"):
        resolve_names(["lada_topp0.9_no_remask"], results)
    with pytest.raises(BdgenError, match="unknown format"):
        render(compare_table(resolve_names([A, B], results)), "xml")
