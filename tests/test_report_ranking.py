"""Ranking profiles: constraints, priorities, noise-aware ties, filters; on known values."""

from __future__ import annotations

import pytest
from _result_files import load_legacy_dir
from scipy import stats

from bdgen.diffusion.method import Method
from bdgen.errors import BdgenError
from bdgen.eval.aggregate import Aggregate, MethodResult
from bdgen.report import metrics as M
from bdgen.report.profiles import (
    Constraint,
    apply_where,
    builtin_profiles,
    load_profile,
    parse_where,
    profile_from_dict,
)
from bdgen.report.ranking import rank


def result(method: str, model: str = "m1", **per_seed: list[float]) -> MethodResult:
    """A result with the given per-seed values (canonical metric names)."""
    n = len(next(iter(per_seed.values())))
    return MethodResult(
        model=model, method=method, config=Method.parse(method).legacy_config(),
        metrics={k: Aggregate.of(v) for k, v in per_seed.items()},
        seeds=tuple(range(n)), model_fields={"version": "v1", "noise_schedule": "loglinear"},
        method_fields=Method.parse(method).fields(),
        run_ids={i: f"ev{method[-3:]}{i}" for i in range(n)})


TWO = {"priorities": ["mode_coverage_weighted", "node_tv"]}


def test_shipped_profiles_load():
    assert {"preferred", "default"} <= set(builtin_profiles())
    p = load_profile("preferred")
    assert [q.metric for q in p.priorities] == [
        "novelty_x_mode_coverage_weighted", "transitivity_score",
        "conditional_edge_tv_weighted", "degree_tv_per_type_weighted", "node_tv"]
    assert [q.direction for q in p.priorities] == ["higher", "higher", "lower", "lower",
                                                  "lower"]
    assert [str(c) for c in p.constraints] == [
        "inside_validity >= 0.93", "unmasking == llada", "top_p == 0.9"]
    assert load_profile("default").name == "default"


@pytest.mark.parametrize("bad,msg", [
    ({"priorities": ["nodee_tv"]}, "node_tv"),  # suggestion for a typo
    ({"priorities": []}, "at least one priority"),
    ({"priorities": ["node_tv"], "constraints": ["inside_validity ~ 3"]}, "bad constraint"),
    ({"priorities": ["node_tv"], "constraints": ["inside_validity >= high"]}, "non-number"),
    ({"priorities": ["node_tv"], "colour": 1}, "unknown key 'colour'; valid keys: name"),
    ({"priorities": ["node_tv"], "noise": {"alpha": 2}}, "alpha"),
])
def test_bad_profiles_are_rejected(bad, msg):
    with pytest.raises(BdgenError, match=msg):
        profile_from_dict(bad, "p.yaml")


def test_unknown_profile_name():
    with pytest.raises(BdgenError, match="preferred"):
        load_profile("prefered")


def test_constraints_on_metrics_and_fields():
    r = result("llada_topp0.9_no_remask", inside_validity=[0.93, 0.93])
    assert Constraint.parse("inside_validity >= 0.93").check(r) is None
    assert "fails" in Constraint.parse("inside_validity > 0.93").check(r)
    assert Constraint.parse("top_p == 0.9").check(r) is None
    assert Constraint.parse("unmasking != random").check(r) is None
    assert Constraint.parse("version == v1").check(r) is None
    assert Constraint.parse("t_switch == null").check(r) is None  # no remasking
    assert "not measured" in Constraint.parse("node_tv <= 1").check(r)


def test_constraints_exclude_with_reasons():
    prof = profile_from_dict({"constraints": ["inside_validity >= 0.93", "unmasking == llada"],
                              "priorities": ["mode_coverage_weighted"]})
    keep = result("llada_topp0.9_no_remask", inside_validity=[0.95, 0.95],
                  mode_coverage_weighted=[0.7, 0.7])
    low = result("llada_topp0.9_remdm_cap_eta0.2", inside_validity=[0.92, 0.92],
                 mode_coverage_weighted=[0.9, 0.9])
    rnd = result("random_topp0.9_no_remask", inside_validity=[0.99, 0.99],
                 mode_coverage_weighted=[0.9, 0.9])
    rk = rank([low, keep, rnd], prof)
    assert [r.result.method for r in rk.rows] == [keep.method]
    reasons = {r.method: why for r, why in rk.excluded}
    assert "inside_validity" in reasons[low.method]
    assert "unmasking = random" in reasons[rnd.method]


def test_clear_difference_orders_by_first_priority():
    a = result("llada_topp0.9_no_remask", mode_coverage_weighted=[0.50, 0.51, 0.49],
               node_tv=[0.1, 0.1, 0.1])
    b = result("llada_argmax_no_remask", mode_coverage_weighted=[0.90, 0.91, 0.89],
               node_tv=[0.9, 0.9, 0.9])
    rk = rank([a, b], profile_from_dict(TWO))
    assert [r.result.method for r in rk.rows] == [b.method, a.method]
    assert all(not r.ties and r.note == "" for r in rk.rows)


def test_tie_within_noise_is_decided_by_the_next_priority():
    # Means 0.76 vs 0.75 with seed spread ~0.04: not significant at 0.05.
    a = result("llada_topp0.9_no_remask", mode_coverage_weighted=[0.72, 0.76, 0.80],
               node_tv=[0.30, 0.31, 0.29])
    b = result("llada_argmax_no_remask", mode_coverage_weighted=[0.70, 0.75, 0.80],
               node_tv=[0.10, 0.11, 0.09])
    rk = rank([a, b], profile_from_dict(TWO))
    assert [r.result.method for r in rk.rows] == [b.method, a.method]
    top = rk.rows[0]
    p = stats.ttest_ind([0.72, 0.76, 0.80], [0.70, 0.75, 0.80], equal_var=False).pvalue
    assert top.ties[0].metric == "mode_coverage_weighted"
    assert top.ties[0].p_value == pytest.approx(p, rel=1e-9)
    assert top.decided_by == "Node TV"
    assert top.note == f"tied on Mode coverage (weighted) (p={p:.2f}); decided by Node TV"


def test_nontransitive_ties_use_the_block_leader():
    # x1 ~ x2 and x2 ~ x3 within noise, but x1 vs x3 significant: blocks {x1, x2}, {x3}.
    x1 = result("llada_topp0.9_remdm_cap_eta0.2", mode_coverage_weighted=[0.80, 0.82, 0.84],
                node_tv=[0.5, 0.5, 0.5])
    x2 = result("llada_topp0.9_remdm_cap_eta0.4", mode_coverage_weighted=[0.77, 0.79, 0.81],
                node_tv=[0.2, 0.2, 0.2])
    x3 = result("llada_topp0.9_remdm_cap_eta0.6", mode_coverage_weighted=[0.74, 0.76, 0.78],
                node_tv=[0.0, 0.0, 0.0])
    for a, b, sig in ((x1, x2, False), (x2, x3, False), (x1, x3, True)):
        assert M.differs(M.value(a, "mode_coverage_weighted"),
                         M.value(b, "mode_coverage_weighted"), 0.05)[0] is sig
    rk = rank([x3, x1, x2], profile_from_dict(TWO))
    # x3 has the best node TV but is significantly below the leader x1: it stays last.
    assert [r.result.method for r in rk.rows] == [x2.method, x1.method, x3.method]
    assert [r.rank for r in rk.rows] == [1, 2, 3]
    assert rk.rows[2].ties == []
    assert rk.rows[0].ties[0].leader == x1.label


def test_all_tied_falls_back_to_the_priority_means_in_order():
    a = result("llada_topp0.9_no_remask", mode_coverage_weighted=[0.70, 0.80],
               node_tv=[0.2, 0.3])
    b = result("llada_argmax_no_remask", mode_coverage_weighted=[0.72, 0.80],
               node_tv=[0.2, 0.3])
    rk = rank([a, b], profile_from_dict(TWO))
    assert [r.result.method for r in rk.rows] == [b.method, a.method]
    assert rk.rows[0].decided_by == "Mode coverage (weighted) mean (nothing significant)"
    assert len(rk.rows[0].ties) == 2


def test_single_seed_uses_std_overlap():
    a = result("llada_topp0.9_no_remask", mode_coverage_weighted=[0.80], node_tv=[0.5])
    b = result("llada_argmax_no_remask", mode_coverage_weighted=[0.79], node_tv=[0.1])
    rk = rank([a, b], profile_from_dict(TWO))  # std 0 each: no overlap -> a wins outright
    assert [r.result.method for r in rk.rows] == [a.method, b.method]
    wide = Aggregate(0.79, 0.02, 1)
    assert M.differs(Aggregate(0.80, 0.0, 1), wide, 0.05) == (False, None)


def test_welch_matches_scipy():
    x, y = [0.1, 0.4, 0.35, 0.2], [0.5, 0.45, 0.7]
    p = M.welch_p(Aggregate.of(x), Aggregate.of(y))
    assert p == pytest.approx(stats.ttest_ind(x, y, equal_var=False).pvalue, rel=1e-9)
    assert M.welch_p(Aggregate.of([1.0, 1.0]), Aggregate.of([1.0, 1.0])) == 1.0
    assert M.welch_p(Aggregate.of([1.0, 1.0]), Aggregate.of([2.0, 2.0])) == 0.0


def test_composite_is_the_product_of_means():
    r = result("llada_topp0.9_no_remask", novelty=[0.9, 1.0], mode_coverage_weighted=[0.7, 0.8])
    agg = M.value(r, "novelty_x_mode_coverage_weighted")
    assert agg.mean == pytest.approx(0.95 * 0.75)
    assert agg.std == pytest.approx(Aggregate.of([0.63, 0.8]).std)
    assert M.metric_def("novelty_x_mode_coverage_weighted").direction == "higher"


def test_preferred_profile_on_the_legacy_results(legacy_dir):
    results = load_legacy_dir(legacy_dir)
    rk = rank(results, load_profile("preferred"))
    methods = [r.result.method for r in rk.rows]
    # The gate keeps the 10 LLaDA + top-p methods (all >= 93 % inside validity).
    assert len(methods) == 10 and all(m.startswith("llada_topp0.9") for m in methods)
    assert len(rk.excluded) == 12
    # The researchers' recommendation (spec §7.7) comes out on top.
    assert methods[0] == "llada_topp0.9_remdm_confidence_tsw1.0"
    comp = M.value(rk.rows[0].result, "novelty_x_mode_coverage_weighted").mean
    assert round(comp, 3) == 0.732
    assert rk.rows[0].note.startswith("tied on Novelty x MC (wt.)")


def test_where_filters(legacy_dir):
    results = load_legacy_dir(legacy_dir)
    w = parse_where(["unmasking=llada", "t_switch=0.5,1"], results)
    got = sorted(r.method for r in apply_where(results, w))
    assert got == ["llada_topp0.9_remdm_cap_eta0.2", "llada_topp0.9_remdm_cap_eta0.4",
                   "llada_topp0.9_remdm_cap_eta0.6", "llada_topp0.9_remdm_cap_eta0.8",
                   "llada_topp0.9_remdm_cap_eta1.0", "llada_topp0.9_remdm_confidence_tsw0.5",
                   "llada_topp0.9_remdm_confidence_tsw1.0"]
    assert [r.method for r in apply_where(results, parse_where(["strategy=null", "top_p=null"],
                                                                results))] == [
        "llada_argmax_no_remask", "random_argmax_no_remask"]
    assert apply_where(results, {}, min_seeds=6) == []
    with pytest.raises(BdgenError, match=r"unknown key 'temprature'.*valid keys: .*temperature"):
        parse_where(["temprature=0"], results)
    assert len(apply_where(results, parse_where(["noise_schedule=loglinear"], results))) == 22


def test_vectorised_test_matches_the_scalar_one():
    import random

    import numpy as np

    rng = random.Random(3)
    aggs = [Aggregate.of([rng.gauss(0.5, rng.choice([0.0, 0.01, 0.1])) for _ in
                          range(rng.choice([1, 2, 5]))]) for _ in range(200)]
    aggs.append(Aggregate.of([0.5, 0.5]))
    for a in aggs[:20]:
        diff, p = M.differs_many(a, [b.mean for b in aggs], [b.std for b in aggs],
                                 [b.n for b in aggs], 0.05)
        for k, b in enumerate(aggs):
            d1, p1 = M.differs(a, b, 0.05)
            assert bool(diff[k]) == d1
            assert (p1 is None and np.isnan(p[k])) or p[k] == pytest.approx(p1, rel=1e-12)


def test_all_tied_with_equal_first_means_is_decided_by_the_next_mean():
    a = result("llada_topp0.9_no_remask", mode_coverage_weighted=[0.70, 0.80],
               node_tv=[0.25, 0.35])
    b = result("llada_argmax_no_remask", mode_coverage_weighted=[0.70, 0.80],
               node_tv=[0.2, 0.3])
    rk = rank([a, b], profile_from_dict(TWO))
    assert [r.result.method for r in rk.rows] == [b.method, a.method]  # lower node TV first
    assert rk.rows[0].decided_by == "Node TV mean (nothing significant)"
