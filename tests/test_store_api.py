"""Recording runs and querying results: constraints, atomicity, bad input, aggregates."""
# ruff: noqa: F811  (pytest fixtures imported from _store_support are redefined as arguments)

from __future__ import annotations

import math

import pytest
from _store_support import (  # noqa: F401  (fixtures)
    METHOD,
    MODEL,
    make_generation_run,
    sample_metrics,
    store,
    store_url,
)
from sqlalchemy import select

from bdgen.errors import BdgenError
from bdgen.eval.aggregate import Aggregate
from bdgen.store.api import DEFAULT_EVALUATOR_VERSION, Store
from bdgen.store.models import EvaluationRun, GenerationRun, MetricValue
from bdgen.store.queries import metric_aggregates


def _eval_rows(store, gid):
    with store.read_session() as s:
        return list(s.scalars(select(EvaluationRun).where(
            EvaluationRun.generation_run_pk == gid)))


def test_identities_are_get_or_create_and_consistent(store):
    d1 = store.get_or_create_dataset("synthetic-abc", "synthetic", "ab" * 32, split_seed=42,
                                     split_fractions=(0.8, 0.1, 0.1), stats={"n": 10})
    assert store.get_or_create_dataset("synthetic-abc", "synthetic", "ab" * 32) == d1
    with pytest.raises(BdgenError, match="content hash"):
        store.get_or_create_dataset("synthetic-abc", "synthetic", "cd" * 32)
    m1 = store.get_or_create_model(MODEL, "v1", "loglinear", dataset_id="synthetic-abc",
                                   model_config={"d_model": 32}, checkpoint_sha256="1" * 64)
    assert store.get_or_create_model(MODEL, "v1", "loglinear") == m1
    with pytest.raises(BdgenError, match="noise_schedule"):
        store.get_or_create_model(MODEL, "v1", "linear")
    with pytest.raises(BdgenError, match="not recorded"):
        store.get_or_create_model("other", "v1", "linear", dataset_id="nope")
    with pytest.raises(BdgenError, match="version"):
        store.get_or_create_model("other", "v3", "linear")
    a = store.get_or_create_method("llada_topp0.9_remdm_cap_eta0.4")
    from bdgen.diffusion.method import Method

    assert store.get_or_create_method(Method("llada", 0.9, remasking="cap", eta=0.4)) == a
    with pytest.raises(BdgenError, match="closest valid name"):
        store.get_or_create_method("llada_top0.9_no_remask")


def test_model_of_checkpoint_finds_the_one_model_of_a_checkpoint_hash(store):
    from bdgen.store.api import CheckpointModel

    store.get_or_create_dataset("synthetic-abc", "synthetic", "ab" * 32)
    store.get_or_create_model("v2-learned-2222222222", "v2", "learned",
                              dataset_id="synthetic-abc", checkpoint_sha256="2" * 64)
    store.get_or_create_model("legacy", "v1", "loglinear")  # imported: no checkpoint
    assert store.model_of_checkpoint("2" * 64) == CheckpointModel("v2-learned-2222222222",
                                                                  "v2")
    assert store.model_of_checkpoint("3" * 64) is None
    store.get_or_create_model("v2-learned-copy", "v2", "learned", checkpoint_sha256="2" * 64)
    assert store.model_of_checkpoint("2" * 64) is None  # ambiguous: not decided here


def test_generation_run_lifecycle_and_uniqueness(store):
    gid = make_generation_run(store, seed=1)
    with store.read_session() as s:
        row = s.get(GenerationRun, gid)
        assert (row.status, row.samples_path, row.provenance) == ("succeeded", "/samples/1.pt",
                                                                  "bdgen")
        assert row.code_version and row.host and row.duration_s is not None
    with pytest.raises(BdgenError, match="already succeeded"):
        store.start_generation_run(MODEL, METHOD, 1, 100, 10)
    # a failed (or stale running) run is taken over by the re-run, same id
    g2 = store.start_generation_run(MODEL, METHOD, 2, 100, 10)
    store.fail_run(g2, "CUDA out of memory")
    with pytest.raises(BdgenError, match="status 'failed'"):
        store.record_evaluation(g2, sample_metrics(0))
    assert store.start_generation_run(MODEL, METHOD, 2, 100, 10) == g2
    # force redoes a succeeded run and drops its (now stale) evaluations
    store.record_evaluation(gid, sample_metrics(1))
    assert store.start_generation_run(MODEL, METHOD, 1, 100, 10, force=True) == gid
    assert _eval_rows(store, gid) == []
    with pytest.raises(BdgenError, match="not recorded"):
        store.start_generation_run("no-such-model", METHOD, 1, 100, 10)
    with pytest.raises(BdgenError, match="seed must be an integer"):
        store.start_generation_run(MODEL, METHOD, "1", 100, 10)


def test_record_evaluation_and_query(store):
    gids = [make_generation_run(store, seed=s) for s in (42, 123, 456)]
    values = {42: 0.1, 123: 0.2, 456: 0.4}
    for gid, seed in zip(gids, (42, 123, 456)):
        store.record_evaluation(gid, {"eval/node_js": values[seed], "edge_tv": 0.5,
                                      "validity_by_num_rooms": {"7": {"overall": 1.0}}},
                                mlflow_run_id=f"mlf{seed}")
    (r,) = store.method_results(model=MODEL)
    assert r.method == METHOD and r.seeds == (42, 123, 456)
    ref = Aggregate.of(values.values())
    assert r.metrics["node_js"].mean == ref.mean and r.metrics["node_js"].std == ref.std
    assert r.metrics["edge_tv"] == Aggregate(0.5, 0.0, 3)
    assert r.metrics["validity_by_num_rooms/7/overall"].n == 3
    assert r.mlflow_run_ids == {42: "mlf42", 123: "mlf123", 456: "mlf456"}
    assert set(r.run_ids) == {42, 123, 456}
    assert r.config["top_p"] == 0.9 and r.config["sampling_steps"] == 10
    assert r.method_fields["unmasking"] == "llada" and r.model_fields["version"] == "v1"
    assert store.per_seed_values(MODEL, METHOD, "eval/node_js") == values
    assert store.method_results(model=MODEL, min_seeds=4) == []
    assert list(store.method_results(metrics=["node_js"])[0].metrics) == ["node_js"]
    # SQL aggregates agree with the reference implementation
    with store.read_session() as s:
        rows = {a.metric: a for a in metric_aggregates(s, model=MODEL)}
    assert math.isclose(rows["node_js"].mean, ref.mean, abs_tol=1e-15)
    assert math.isclose(rows["node_js"].std, ref.std, abs_tol=1e-15)
    assert rows["edge_tv"].std == 0.0 and rows["node_js"].n == 3
    with store.read_session() as s:
        primary = {a.metric for a in metric_aggregates(s, primary_only=True)}
    assert primary == {"node_js", "edge_tv"}


def test_where_filters(store):
    for method in ("llada_topp0.9_no_remask", "random_argmax_no_remask",
                   "llada_topp0.9_remdm_confidence_tsw0.5"):
        store.record_evaluation(make_generation_run(store, method=method), sample_metrics(1))
    names = lambda rs: sorted(r.method for r in rs)  # noqa: E731
    assert names(store.method_results(where={"unmasking": "llada"})) == [
        "llada_topp0.9_no_remask", "llada_topp0.9_remdm_confidence_tsw0.5"]
    assert names(store.method_results(where={"strategy": None})) == [
        "llada_topp0.9_no_remask", "random_argmax_no_remask"]
    assert names(store.method_results(where={"t_switch": "0.5", "top_p": 0.9})) == [
        "llada_topp0.9_remdm_confidence_tsw0.5"]
    assert names(store.method_results(where={"strategy": ["confidence", "cap"]})) == [
        "llada_topp0.9_remdm_confidence_tsw0.5"]
    assert store.method_results(where={"version": "v2"}) == []
    with pytest.raises(BdgenError, match="unknown filter 'colour'"):
        store.method_results(where={"colour": "red"})
    with pytest.raises(BdgenError, match="top_p"):
        store.method_results(where={"top_p": "high"})
    with pytest.raises(BdgenError, match="unknown metric"):
        store.method_results(metrics=["node_jss"])


@pytest.mark.parametrize("metrics, needle", [
    ({"eval/node_jsx": 0.1}, "unknown metric 'eval/node_jsx'"),
    ({"node_js": float("nan")}, "'node_js' is nan"),
    ({"node_js": float("inf")}, "'node_js' is inf"),
    ({"node_js": "0.1"}, "non-numeric value '0.1'"),
    ({"node_js": True}, "non-numeric value True"),
    ({"node_js": None}, "non-numeric value None"),
    ({"node_js": 0.1, "eval/node_js": 0.2}, "given twice"),
    ({"denoise/acc_node@t=0.5": 0.5}, "per-model denoising metric"),
    ([("node_js", 0.1)], "must be a mapping"),
])
def test_bad_metrics_are_refused_and_nothing_is_committed(store, metrics, needle):
    gid = make_generation_run(store)
    good = sample_metrics(3)
    bad = dict(good, **metrics) if isinstance(metrics, dict) else metrics
    with pytest.raises(BdgenError, match=needle.replace("(", r"\(")) as info:
        store.record_evaluation(gid, bad)
    assert "\n" not in str(info.value)
    assert store.counts()["metric_values"] == 0
    (row,) = _eval_rows(store, gid)  # the attempt is visible as a failed row
    assert row.status == "failed" and row.error
    # re-running with good input succeeds and takes the failed row over
    ev = store.record_evaluation(gid, good)
    assert ev == row.id
    assert [r.status for r in _eval_rows(store, gid)] == ["succeeded"]
    assert store.counts()["metric_values"] == 5


def test_unknown_generation_run(store):
    with pytest.raises(BdgenError, match="generation run 999 not found"):
        store.record_evaluation(999, sample_metrics(0))
    assert store.counts()["evaluation_runs"] == 0


def test_failure_inside_the_transaction_rolls_everything_back(store):
    gid = make_generation_run(store)
    with pytest.raises(RuntimeError), store.session() as s:
        series = s.get(GenerationRun, gid).series_pk
        ev = EvaluationRun(generation_run_pk=gid, series_pk=series, reference="train",
                           evaluator_version="x", status="running")
        s.add(ev)
        s.flush()
        s.execute(MetricValue.__table__.insert(),
                  [{"evaluation_run_pk": ev.id, "series_pk": series,
                    "metric_pk": store._metric_pk(s, "node_js"), "value": 0.1}])
        raise RuntimeError("evaluator crashed mid-write")
    assert store.counts()["evaluation_runs"] == 0 and store.counts()["metric_values"] == 0


def test_duplicate_evaluation_is_refused_unless_replace(store):
    gid = make_generation_run(store)
    ev = store.record_evaluation(gid, {"node_js": 0.1})
    with pytest.raises(BdgenError, match="already has a succeeded evaluation"):
        store.record_evaluation(gid, {"node_js": 0.2})
    assert store.per_seed_values(MODEL, METHOD, "node_js") == {42: 0.1}
    assert [r.status for r in _eval_rows(store, gid)] == ["succeeded"]  # not marked failed
    assert store.record_evaluation(gid, {"node_js": 0.2}, replace=True) == ev
    assert store.per_seed_values(MODEL, METHOD, "node_js") == {42: 0.2}
    # another evaluator version is another evaluation run; the newest one counts
    store.record_evaluation(gid, {"node_js": 0.3}, evaluator_version="bdgen-9")
    (r,) = store.method_results()
    assert r.metrics["node_js"].mean == 0.3 and r.metrics["node_js"].n == 1
    with store.read_session() as s:
        (a,) = metric_aggregates(s, metrics=["node_js"])
        (b,) = metric_aggregates(s, metrics=["node_js"],
                                 where={"evaluator_version": DEFAULT_EVALUATOR_VERSION})
    assert (a.mean, a.n) == (0.3, 1) and (b.mean, b.n) == (0.2, 1)


def test_stratified_definitions_are_added_on_demand(store):
    gid = make_generation_run(store)
    before = store.counts()["metric_definitions"]
    store.record_evaluation(gid, {"edge_present_rate_by_num_rooms/6": 0.6,
                                  "transitivity_by_num_rooms": {"5": {"h_consistent": 1.0}}})
    assert store.counts()["metric_definitions"] == before + 2
    with pytest.raises(BdgenError, match="unknown metric"):
        store.record_evaluation(make_generation_run(store, seed=7),
                                {"validity_by_num_rooms/8/bogus": 1.0})


def test_denoising_is_per_model_with_method_scoped_legacy_blocks(store):
    store.record_evaluation(make_generation_run(store), {"node_js": 0.1})
    store.record_evaluation(make_generation_run(store, method="random_argmax_no_remask"),
                            {"node_js": 0.2})
    store.record_denoising(MODEL, {"denoise/acc_node@t=0.5": 0.5, "denoise_ce_edge_t0.9": 2.0})
    store.record_denoising(MODEL, {"denoise_acc_node_t0.5": 0.7}, method=METHOD)
    by = {r.method: r.denoising for r in store.method_results()}
    assert by[METHOD] == {"denoise_acc_node_t0.5": 0.7}
    assert by["random_argmax_no_remask"] == {"denoise_acc_node_t0.5": 0.5,
                                             "denoise_ce_edge_t0.9": 2.0}
    store.record_denoising(MODEL, {"denoise_acc_node_t0.5": 0.6})  # replaces
    assert store.method_results()[1].denoising == {"denoise_acc_node_t0.5": 0.6}
    with pytest.raises(BdgenError, match="not a denoising metric"):
        store.record_denoising(MODEL, {"node_js": 0.1})


def test_bulk_record_is_all_or_nothing(store):
    gids = [make_generation_run(store, seed=s) for s in range(3)]
    ids = store.record_evaluations([(g, sample_metrics(g)) for g in gids[:2]])
    assert len(ids) == 2 and store.counts()["metric_values"] == 10
    new_key = {"transitivity_by_num_rooms/6/v_consistent": 0.75}
    with pytest.raises(BdgenError, match="conflicts"):  # its new definition is rolled back
        store.record_evaluations([(gids[2], new_key), (gids[0], sample_metrics(0))])
    with pytest.raises(BdgenError, match="is nan"):
        store.record_evaluations([(gids[2], {"node_js": float("nan")})])
    assert store.counts()["evaluation_runs"] == 2 and store.counts()["metric_values"] == 10
    store.record_evaluation(gids[2], new_key)  # no stale cached definition id
    assert store.per_seed_values(MODEL, METHOD, "transitivity_by_num_rooms/6/v_consistent") \
        == {2: 0.75}


def test_reopen_sees_committed_data(store_url):
    with Store.open(store_url) as a:
        a.record_evaluation(make_generation_run(a), {"node_js": 0.25})
    with Store.open(store_url) as b:
        assert b.per_seed_values(MODEL, METHOD, "node_js") == {42: 0.25}
