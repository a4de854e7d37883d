"""Guided results in leaderboard, compare and report: the constraint metrics are shown, the
shipped `guided` profile ranks by satisfaction with quality floors, results measured against
different constraint sets are told apart and never ranked together."""
# ruff: noqa: F811  (pytest fixtures imported from _store_support are redefined as arguments)

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from _store_support import store, store_url  # noqa: F401  (fixtures)

from bdgen.errors import BdgenError
from bdgen.report.comparison_md import build_comparison, column_labels
from bdgen.report.profiles import apply_where, load_profile
from bdgen.report.ranking import rank
from bdgen.report.tables import compare_table

NR = "llada_topp0.9_no_remask"
CF = "llada_topp0.9_remdm_confidence_tsw1.0"


@pytest.fixture
def results(store, legacy_dir):
    guided = Path(legacy_dir).parent / "guided_loglinear"
    if not guided.is_dir():
        pytest.skip("guided legacy results absent")
    files = [Path(legacy_dir) / f"{m}.json" for m in (NR, CF)]
    files += sorted((guided / "round1_guid").glob("*.json"))
    files += sorted((guided / "round3_guid").glob("*.json"))
    reports = store.import_result_files(files)
    assert {r.status for r in reports} == {"added"} and len(reports) == 2 + 6 + 12
    return store.summary_results()


def test_guided_profile_ranks_by_satisfaction_within_one_set(results):
    prof = load_profile("guided")
    assert prof.priorities[0].metric == "constraint/satisfaction_overall"
    with pytest.raises(BdgenError, match="measured against 2 constraint sets"):
        rank(results, prof)
    r3 = [r for r in results if "_alpha_" in r.method or "_guided_" not in r.method]
    cs2 = {r.constraint_set for r in r3 if r.constraint_set}
    assert len(cs2) == 1
    ranking = rank(r3, prof)
    excluded = {r.method: why for r, why in ranking.excluded}
    # the unguided baselines were never measured against the set: out, with the reason
    assert excluded.pop(NR) == excluded.pop(CF) == "constraint/satisfaction_overall not measured"
    # the inside-validity floor removes the high-alpha confidence runs (92.3 %, ...)
    assert sorted(excluded) == [f"{CF}_guided_alpha_K16_a0.3", f"{CF}_guided_alpha_K16_a0.5"]
    assert all(why.startswith("inside_validity = 0.9") for why in excluded.values())
    rows = ranking.rows
    assert len(rows) == 10
    assert all(row.result.metrics["diversity"].mean >= 0.80 for row in rows)
    order = [row.result.method for row in rows]
    # noise-aware: 3 seeds of 200 samples; 69.0 +/- 4.1 % vs 57.3 +/- 4.3 % is a tie at
    # alpha 0.05 (decided by mode coverage), a win at 0.2
    assert order.index(f"{NR}_guided_alpha_K16_a0.5") > order.index(f"{NR}_guided_alpha_K16_a0.01")
    sharp = [row.result for row in rank(r3, prof, alpha=0.2).rows]
    sat = [r.metrics["constraint/satisfaction_overall"].mean for r in sharp]
    assert sharp[0].method == f"{NR}_guided_alpha_K16_a0.01" and sat[0] == max(sat)
    # a quality floor is a hard constraint: raise it and the best-satisfying run is out
    strict = replace(prof, constraints=prof.constraints[:3] + (
        type(prof.constraints[0]).parse("diversity >= 0.95"),))
    out = {r.method for r, _ in rank(r3, strict).excluded}
    assert f"{NR}_guided_alpha_K16_a0.01" in out


def test_compare_and_report_show_the_constraint_metrics(results):
    by = {r.method: r for r in results}
    pair = [by[NR], by[f"{NR}_guided_basic_K16_a0.1"]]
    table = compare_table(pair)
    assert "Constraint Satisfaction" in table.groups.values()
    rows = {row[0]: row for row in table.rows}
    assert rows["Satisfaction (all)"][1:3] == ["--", "77.0 +/- 1.8%"]
    assert rows["Satisfaction: one_living"][2] == "100.0%"
    assert "Violation histogram: one_kitchen [0]" not in rows  # not displayed
    doc = build_comparison(pair)
    sec = next(s for s in doc.sections if s.title == "Constraint Satisfaction")
    assert sec.header[-1] == "Delta" and sec.rows[0][0] == "**Satisfaction (all)**"
    assert sec.rows[0][1:] == ["--", "77.0 +/- 1.8%", "--"]


def test_one_method_measured_against_two_sets_gets_two_labelled_columns(results):
    r = next(x for x in results if x.method.endswith("basic_K16_a0.1"))
    other = replace(r, constraint_set="f" * 64)
    plain = replace(r, constraint_set="")
    labels = column_labels([r, other, plain])
    assert labels[0] == f"{r.method} [cs-legacy-{r.constraint_set[7:15]}]"
    assert labels[1] == f"{r.method} [cs-{'f' * 12}]"
    assert labels[2] == f"{r.method} [no constraints]"
    assert len({x.label for x in (r, other, plain)}) == 3
    assert column_labels([r]) == [r.method]


def test_constraint_set_filter_takes_identity_prefix_tag_or_none(store, results):
    cs = next(r.constraint_set for r in results if "_alpha_" in r.method)
    tag = next(r.constraint_tag for r in results if "_alpha_" in r.method)
    for value in (cs, cs[:15], tag):
        got = store.method_results(where={"constraint_set": value})
        assert len(got) == 12 and {r.constraint_set for r in got} == {cs}
        assert len(apply_where(results, {"constraint_set": [value]})) == 12
    assert {r.method for r in store.method_results(where={"constraint_set": "none"})} == {
        NR, CF}
    with pytest.raises(BdgenError, match="at least 8 characters"):
        store.method_results(where={"constraint_set": "legacy-1"})
