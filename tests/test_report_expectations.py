"""Expectation files and verdicts, at every threshold boundary (spec §7.7 thresholds)."""

from __future__ import annotations

import pytest
from _result_files import load_legacy_dir

from bdgen.errors import BdgenError
from bdgen.eval.aggregate import Aggregate, MethodResult
from bdgen.report.expectations import expectations_from_dict, load_expectations, overall, verdicts


@pytest.fixture(scope="module")
def v2():
    return load_expectations("v2_remasking")


def one(metric: str, mean: float) -> MethodResult:
    return MethodResult(model="m", method="llada_topp0.9_no_remask", config={},
                        metrics={metric: Aggregate(mean, 0.01, 5)}, seeds=(1, 2, 3, 4, 5))


def verdict(v2, metric: str, mean: float) -> str:
    return verdicts(one(metric, mean), v2)[metric].verdict


def test_shipped_file_has_the_spec_thresholds(v2):
    items = {e.metric: e for e in v2.items}
    assert items["num_sample_modes"].rule == "expect 100-120, success >= 80, failure < 50"
    assert items["inside_validity"].rule == "expect 0.93-0.97, success >= 0.93, failure < 0.9"
    assert items["edge_js"].rule == "expect 0.05-0.07, success < 0.08, failure > 0.12"
    assert items["diversity"].rule == "expect 0.95-0.98, success >= 0.95, failure < 0.8"
    assert items["mode_coverage_weighted"].rule == (
        "expect 0.8-0.85, success > 0.8, failure < 0.75")


@pytest.mark.parametrize("metric,mean,expected", [
    # unique archetypes: success >= 80, failure < 50
    ("num_sample_modes", 49.999, "fail"), ("num_sample_modes", 50.0, "miss"),
    ("num_sample_modes", 79.9, "miss"), ("num_sample_modes", 80.0, "pass"),
    ("num_sample_modes", 110.0, "pass"), ("num_sample_modes", 500.0, "pass"),
    # inside validity: success >= 0.93, failure < 0.90
    ("inside_validity", 0.8999, "fail"), ("inside_validity", 0.90, "miss"),
    ("inside_validity", 0.9299, "miss"), ("inside_validity", 0.93, "pass"),
    ("inside_validity", 0.995, "pass"),
    # edge JS: success < 0.080, failure > 0.120
    ("edge_js", 0.0799, "pass"), ("edge_js", 0.080, "miss"), ("edge_js", 0.120, "miss"),
    ("edge_js", 0.1201, "fail"), ("edge_js", 0.01, "pass"),
    # diversity: success >= 0.95, failure < 0.80
    ("diversity", 0.7999, "fail"), ("diversity", 0.80, "miss"), ("diversity", 0.95, "pass"),
    # mode coverage (wt): success > 0.80 (strict), failure < 0.75, expect 0.80-0.85
    ("mode_coverage_weighted", 0.7499, "fail"), ("mode_coverage_weighted", 0.75, "miss"),
    ("mode_coverage_weighted", 0.80, "in-range"), ("mode_coverage_weighted", 0.8001, "pass"),
    # expectation without thresholds: in-range or miss, inclusive bounds
    ("transitivity_score", 0.9849, "miss"), ("transitivity_score", 0.985, "in-range"),
    ("transitivity_score", 0.99, "in-range"), ("transitivity_score", 0.9901, "miss"),
])
def test_verdict_boundaries(v2, metric, mean, expected):
    assert verdict(v2, metric, mean) == expected


def test_missing_metric_and_overall(v2):
    vs = verdicts(one("inside_validity", 0.95), v2)
    assert vs["inside_validity"].verdict == "pass"
    assert vs["edge_js"].verdict == "missing" and vs["edge_js"].failing
    assert overall(vs) == "missing"
    assert overall({"a": vs["inside_validity"]}) == "pass"


def test_legacy_best_v1_method_against_v2_expectations(v2, legacy_dir):
    best = {r.method: r for r in load_legacy_dir(legacy_dir)}[
        "llada_topp0.9_remdm_confidence_tsw1.0"]
    vs = verdicts(best, v2)
    assert vs["num_sample_modes"].verdict == "pass"        # 120.8 >= 80
    assert vs["inside_validity"].verdict == "pass"         # 93.3 % >= 93 %
    assert vs["edge_js"].verdict == "fail"                 # 0.204 > 0.120
    assert vs["mode_coverage_weighted"].verdict == "fail"  # 73.3 % < 75 %
    assert vs["mode_coverage_weighted"].mean == pytest.approx(0.733, abs=1e-3)


@pytest.mark.parametrize("bad,msg", [
    ({}, "needs a 'metrics' mapping"),
    ({"metrics": {"edge_js": {"success": "<< 1"}}}, "bad threshold"),
    ({"metrics": {"edge_js": {"expect": [0.2, 0.1]}}}, r"\[low, high\]"),
    ({"metrics": {"edge_jss": {"success": "< 1"}}}, "edge_js"),
    ({"metrics": {"edge_js": {}}}, "at least one"),
    ({"metrics": {"edge_js": {"succes": "< 1"}}}, "unknown key 'metrics.edge_js.succes'"),
])
def test_bad_expectation_files(bad, msg):
    with pytest.raises(BdgenError, match=msg):
        expectations_from_dict(bad, "e.yaml")


def test_unknown_expectation_file():
    with pytest.raises(BdgenError, match="v2_remasking"):
        load_expectations("no_such_file.yaml")
