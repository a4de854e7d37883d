"""Store separation of constraint sets: results that differ in the constraint set are never
pooled, whether a guided run sampled with it, a baseline was measured against it, or two
legacy files share a guided tag (GUIDANCE_SPEC G6.2: the tag names no set)."""
# ruff: noqa: F811  (pytest fixtures imported from _store_support are redefined as arguments)

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from _store_support import MODEL, cs_metrics, store, store_url  # noqa: F401  (fixtures)

from bdgen.errors import BdgenError

GUIDED = "llada_topp0.9_no_remask_guided_K4_a0.1_soft_linear"
BASELINE = "llada_topp0.9_no_remask"
A, B = "a" * 64, "b" * 64


def guided_run(store, seed: int, cs: str) -> int:
    gid = store.start_generation_run(MODEL, GUIDED, seed, 100, 10, constraint_set=cs)
    store.finish_generation_run(gid, f"{seed:064d}", f"/samples/{cs[0]}/{seed}.pt")
    return gid


def test_two_constraint_sets_same_method_are_two_results(store):
    store.get_or_create_model(MODEL, "v1", "loglinear")
    for seed, sat in ((1, 0.5), (2, 0.7)):
        store.record_evaluation(guided_run(store, seed, A), cs_metrics(sat), constraint_set=A)
        store.record_evaluation(guided_run(store, seed, B), cs_metrics(sat / 2), constraint_set=B)
    for query in (store.method_results, store.summary_results):
        results = query()
        assert [(r.method, r.constraint_set) for r in results] == [(GUIDED, A), (GUIDED, B)]
        a, b = results
        assert a.metrics["constraint/satisfaction_overall"].mean == pytest.approx(0.6)
        assert b.metrics["constraint/satisfaction_overall"].mean == pytest.approx(0.3)
        assert a.metrics["constraint/satisfaction_overall"].n == 2
        assert a.metrics["constraint/violation_histogram_one_kitchen/0"].mean == 60
        assert a.config["constraint_set"] == A and a.config["num_constraints"] == 1
    aggs = {(a.constraint_set, a.metric): a for a in store.metric_aggregates()}
    assert aggs[(A, "constraint/satisfaction_overall")].mean == pytest.approx(0.6)
    assert aggs[(B, "constraint/satisfaction_overall")].mean == pytest.approx(0.3)
    by_seed = {(a.constraint_set, a.metric): a for a in store.metric_aggregates(
        where={"seed": [1]})}  # the per-seed SQL path
    assert by_seed[(B, "constraint/satisfaction_overall")].mean == pytest.approx(0.25)
    only_b = store.method_results(where={"constraint_set": B})
    assert [r.constraint_set for r in only_b] == [B]
    assert store.counts()["series"] == 2 and store.counts()["generation_runs"] == 4
    # the set is part of the run's identity: the same seed under A again is a duplicate
    with pytest.raises(BdgenError, match="already succeeded"):
        store.start_generation_run(MODEL, GUIDED, 1, 100, 10, constraint_set=A)
    info = store.find_generation_run(MODEL, GUIDED, 1, 100, 10, constraint_set=B)
    assert info is not None and info.constraint_set == B


def test_guided_runs_need_their_set_and_are_measured_against_it_only(store):
    store.get_or_create_model(MODEL, "v1", "loglinear")
    with pytest.raises(BdgenError, match="needs the identity of its constraint set"):
        store.start_generation_run(MODEL, GUIDED, 1, 100, 10)
    with pytest.raises(BdgenError, match="is not guided"):
        store.start_generation_run(MODEL, BASELINE, 1, 100, 10, constraint_set=A)
    gid = guided_run(store, 1, A)
    with pytest.raises(BdgenError, match="measured against that set only"):
        store.record_evaluation(gid, cs_metrics(0.5), constraint_set=B)
    with pytest.raises(BdgenError, match="measured against that set only, not none"):
        store.record_evaluation(gid, cs_metrics(0.5))
    plain = store.start_generation_run(MODEL, BASELINE, 1, 100, 10)
    store.finish_generation_run(plain, "1" * 64, "/samples/base/1.pt")
    with pytest.raises(BdgenError, match="need the identity of the constraint set"):
        store.record_evaluation(plain, cs_metrics(0.5))
    with pytest.raises(BdgenError, match="need the identity of the constraint set"):
        store.record_evaluations([(plain, cs_metrics(0.5))])
    assert store.method_results() == []


def test_a_baseline_measured_against_sets_is_one_result_per_set(store):
    store.get_or_create_model(MODEL, "v1", "loglinear")
    gids = []
    for seed in (1, 2):
        gid = store.start_generation_run(MODEL, BASELINE, seed, 100, 10)
        store.finish_generation_run(gid, f"{seed:064d}", f"/samples/base/{seed}.pt")
        store.record_evaluation(gid, {"eval/validity_rate": 1.0, "eval/novelty": 0.8})
        gids.append(gid)
    for gid in gids:
        store.record_evaluation(gid, cs_metrics(0.2), constraint_set=A)
        store.record_evaluation(gid, cs_metrics(0.4), constraint_set=B)
    # measured again (replace): the same row of the set's series, not a new one
    store.record_evaluation(gids[0], cs_metrics(0.3), constraint_set=A, replace=True)
    results = store.method_results()
    assert [(r.method, r.constraint_set) for r in results] == [
        (BASELINE, ""), (BASELINE, A), (BASELINE, B)]
    plain, a, b = results
    assert not any(k.startswith("constraint/") for k in plain.metrics)
    assert plain.metrics["novelty"].mean == pytest.approx(0.8)  # its own evaluation
    assert a.metrics["constraint/satisfaction_overall"].mean == pytest.approx(0.25)
    assert b.metrics["constraint/satisfaction_overall"].mean == pytest.approx(0.4)
    assert a.seeds == b.seeds == plain.seeds == (1, 2)
    counts = store.counts()
    assert counts["series"] == 3 and counts["generation_runs"] == 6
    assert counts["evaluation_runs"] == 6
    ev = store.evaluation_of(gids[0], "train", "bdgen-" + __import__("bdgen").__version__,
                             constraint_set=A)
    assert ev is not None and ev.status == "succeeded"
    assert store.evaluation_metrics(ev.id)["constraint/satisfaction_overall"] == 0.3
    assert store.evaluation_of(gids[0], "train", "x", constraint_set="c" * 64) is None
    # the measurement names the samples of the run it measures, and is no pending work
    info = store.find_generation_run(MODEL, BASELINE, 1, 100, 10, constraint_set=A)
    assert info is not None and info.samples_path == "/samples/base/1.pt"
    store.fail_run(ev.id, "lost", kind="evaluation")
    assert store.pending_generation_runs("train", "bdgen-" + __import__("bdgen").__version__
                                         ) == []


def test_legacy_files_with_one_tag_and_two_sets_are_two_results(store, legacy_dir,
                                                                tmp_path):
    src = (Path(legacy_dir).parent / "guided_loglinear" / "round3_guid"
           / "llada_topp0.9_no_remask_guided_alpha_K16_a0.01.json")
    if not src.is_file():
        pytest.skip("guided legacy results absent")
    root = tmp_path / "loglinear_noise_sc"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    shutil.copy(src, root / "a" / src.name)
    # the same method name and seeds, another constraint set (one constraint renamed)
    text = src.read_text().replace("one_kitchen", "single_kitchen")
    (root / "b" / src.name).write_text(text)
    assert json.loads(text)["method"] == json.loads(src.read_text())["method"]
    reports = store.import_result_files([root])
    assert [r.status for r in reports] == ["added", "added"], [r.line() for r in reports]
    results = store.method_results()
    assert len(results) == 2 and len({r.method for r in results}) == 1
    assert len({r.constraint_set for r in results}) == 2
    names = [set(r.metrics) for r in results]
    one, single = "constraint/satisfaction_one_kitchen", "constraint/satisfaction_single_kitchen"
    assert sorted((one in n, single in n) for n in names) == [(False, True), (True, False)]
    again = store.import_result_files([root])
    assert [r.status for r in again] == ["skipped", "skipped"]


def test_migration_round_trip_keeps_the_results_without_a_set(store_url):
    from bdgen.store import migrate
    from bdgen.store.api import Store
    from bdgen.store.engine import make_engine

    store = Store.open(store_url)
    try:
        store.get_or_create_model(MODEL, "v1", "loglinear")
        gid = store.start_generation_run(MODEL, BASELINE, 1, 100, 10)
        store.finish_generation_run(gid, "1" * 64, "/samples/base/1.pt")
        store.record_evaluation(gid, {"eval/validity_rate": 1.0, "eval/novelty": 0.8})
        store.record_evaluation(gid, cs_metrics(0.2), constraint_set=A)
        store.record_evaluation(guided_run(store, 1, B), cs_metrics(0.5), constraint_set=B)
        assert len(store.method_results()) == 3
        plain = store.method_results(where={"constraint_set": "none"})
    finally:
        store.close()
    engine = make_engine(store_url)
    try:
        assert migrate.downgrade(engine, "0002") == "0002"
    finally:
        engine.dispose()
    store = Store.open(store_url)  # upgraded again on open
    try:
        assert migrate.current_revision(store.engine) == migrate.head_revision()
        assert store.method_results() == plain  # measured results dropped, the rest intact
        assert store.counts()["generation_runs"] == store.counts()["series"] == 1
    finally:
        store.close()


def test_redoing_a_baseline_drops_its_measurements(store):
    store.get_or_create_model(MODEL, "v1", "loglinear")
    gid = store.start_generation_run(MODEL, BASELINE, 1, 100, 10)
    store.finish_generation_run(gid, "1" * 64, "/samples/base/1.pt")
    store.record_evaluation(gid, {"eval/validity_rate": 1.0})
    store.record_evaluation(gid, cs_metrics(0.2), constraint_set=A)
    assert len(store.summary_results()) == 2
    again = store.start_generation_run(MODEL, BASELINE, 1, 100, 10, force=True)
    assert again == gid
    assert store.method_results() == [] and store.summary_results() == []
    assert store.counts()["generation_runs"] == 1 and store.counts()["evaluation_runs"] == 0
    assert store.counts()["metric_summaries"] == 0
