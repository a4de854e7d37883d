"""Legacy result format v1 (spec §7.3): upgrade on read, import as one-seed results, and the
V1-upgrade footnote of the comparison (spec §7.6 item 6). The v1 files are written here."""
# ruff: noqa: F811  (pytest fixtures imported from _store_support are redefined as arguments)

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _references import parse_markdown_tables
from _result_files import load_legacy_dir
from _store_support import store, store_url  # noqa: F401  (fixtures)
from click.testing import CliRunner
from sqlalchemy import select

from bdgen.cli.main import cli
from bdgen.errors import BdgenError
from bdgen.eval.results_json import (
    TOP_LEVEL_KEYS,
    read_results_json,
    results_document,
    write_results_json,
)
from bdgen.report.comparison_md import V1_FOOTNOTE, comparison_markdown
from bdgen.store.models import EvaluationRun, GenerationRun

METHOD = "llada_topp0.9_no_remask"
OTHER = "llada_argmax_no_remask"
MODEL = "legacy-v1-loglinear"


def v1_config(seed=42, top_p=0.9) -> dict:
    """A v1 config block: the v2 keys, but a single "seed" where v2 has "seeds"."""
    return {"seed": seed, "num_samples": 1000, "sampling_steps": 100, "temperature": 0.0,
            "top_p": top_p, "unmasking_mode": "llada", "remasking_enabled": False,
            "remasking_strategy": None, "remasking_eta": None, "remasking_t_switch": None,
            "checkpoint": "checkpoint_final.pt"}


METRICS = {"eval/validity_rate": 1.0, "eval/node_js": 0.0123, "eval/novelty": 0.97,
           "eval/num_sample_modes": 28, "validity_by_num_rooms/8/overall": 0.5}


def v1_doc(method=METHOD, seed=42, metrics=None, top_p=0.9) -> dict:
    return {"method": method, "timestamp": "2026-01-10T12:00:00.000001",
            "config": v1_config(seed, top_p),
            "metrics": dict(METRICS if metrics is None else metrics)}


def write(path: Path, doc) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2))
    return path


@pytest.fixture
def sched(tmp_path) -> Path:
    """A schedule folder, so the importer can tell the model (spec §7.5)."""
    return tmp_path / "eval_results" / "loglinear_noise_sc"


# --- upgrade on read ----------------------------------------------------------------------
@pytest.mark.parametrize("version", [None, 1])
def test_v1_file_is_upgraded_exactly(tmp_path, version):
    doc = v1_doc(seed=7)
    if version is not None:
        doc = {"format_version": version, **doc}
    up = read_results_json(write(tmp_path / f"{METHOD}.json", doc))
    assert list(up) == [*TOP_LEVEL_KEYS, "_upgraded_from_v1"]
    config = v1_config(7)
    del config["seed"]
    assert up == {
        "format_version": 2,
        "method": METHOD,
        "timestamp": "2026-01-10T12:00:00.000001",
        "config": {"seeds": [7], **config},
        "per_seed": {"7": METRICS},
        "summary": {
            "eval/node_js": {"mean": 0.0123, "std": 0.0},
            "eval/novelty": {"mean": 0.97, "std": 0.0},
            "eval/num_sample_modes": {"mean": 28.0, "std": 0.0},
            "eval/validity_rate": {"mean": 1.0, "std": 0.0},
            "validity_by_num_rooms/8/overall": {"mean": 0.5, "std": 0.0},
        },
        "denoising": {},
        "_upgraded_from_v1": True,
    }
    assert list(up["config"])[0] == "seeds"  # "seed" replaced where it stood
    assert list(up["summary"]) == sorted(up["summary"])
    assert all(type(a["std"]) is float for a in up["summary"].values())


def test_v2_file_is_not_flagged(tmp_path):
    doc = results_document(METHOD, {**v1_config(), "seeds": [1, 2]},
                          {1: METRICS, 2: {**METRICS, "eval/novelty": 0.95}})
    del doc["config"]["seed"]
    path = tmp_path / "v2.json"
    write_results_json(path, doc)
    got = read_results_json(path)
    assert "_upgraded_from_v1" not in got and got["summary"]["eval/novelty"]["std"] > 0


def _without(d: dict, key: str) -> dict:
    return {k: v for k, v in d.items() if k != key}


BAD_V1 = [
    ("no_seed", {**v1_doc(), "config": _without(v1_config(), "seed")}, "integer 'seed'"),
    ("string_seed", {**v1_doc(), "config": {**v1_config(), "seed": "42"}}, "integer 'seed'"),
    ("bool_seed", {**v1_doc(), "config": {**v1_config(), "seed": True}}, "integer 'seed'"),
    ("seeds_list", {**v1_doc(), "config": {**v1_config(), "seeds": [42]}}, "has 'seeds'"),
    ("string_metric", v1_doc(metrics={**METRICS, "eval/node_js": "NaN"}),
     "'eval/node_js' has a non-numeric value 'NaN'"),
    ("bool_metric", v1_doc(metrics={**METRICS, "eval/novelty": True}), "non-numeric"),
    ("nan_metric", v1_doc(metrics={**METRICS, "eval/novelty": float("nan")}), "must be finite"),
    ("nested_metric", v1_doc(metrics={**METRICS, "validity_by_num_rooms": {"8": 1.0}}),
     "must be flat"),
    ("empty_metrics", v1_doc(metrics={}), "non-empty object"),
    ("no_metrics", _without(v1_doc(), "metrics"), "lacks metrics"),
    ("no_timestamp", _without(v1_doc(), "timestamp"), "lacks timestamp"),
    ("v2_keys", {**v1_doc(), "per_seed": {}}, "unexpected keys 'per_seed'"),
    ("bad_method", {**v1_doc(), "method": 3}, "non-empty string"),
    ("config_list", {**v1_doc(), "config": [42]}, "config is not an object"),
]


@pytest.mark.parametrize("name, doc, needle", BAD_V1, ids=[b[0] for b in BAD_V1])
def test_broken_v1_file_is_a_one_line_error_naming_it(tmp_path, name, doc, needle):
    path = write(tmp_path / f"{name}.json", doc)
    with pytest.raises(BdgenError) as info:
        read_results_json(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: format v1") and needle in msg and "\n" not in msg, msg


def test_other_format_versions_are_refused(tmp_path):
    for version in (0, 3, "1", True):
        path = write(tmp_path / "x.json", {**v1_doc(), "format_version": version})
        with pytest.raises(BdgenError, match=r"x\.json: format_version .* is not supported"):
            read_results_json(path)


# --- store import -------------------------------------------------------------------------
def test_import_v1_as_one_seed_result_and_remember_the_upgrade(store, sched):
    write(sched / f"{METHOD}.json", v1_doc(seed=42))
    v2 = results_document(OTHER, {**_without(v1_config(top_p=None), "seed"), "seeds": [1, 2]},
                         {1: METRICS, 2: {**METRICS, "eval/novelty": 0.95}})
    write_results_json(sched / f"{OTHER}.json", v2)
    reports = store.import_result_files([sched])
    assert [(r.status, r.added) for r in reports] == [("added", 2), ("added", 1)], \
        [r.line() for r in reports]
    results = {r.method: r for r in store.method_results(model=MODEL)}
    up, normal = results[METHOD], results[OTHER]
    assert up.upgraded_from_v1 and not normal.upgraded_from_v1
    assert up.seeds == (42,) and up.config["seeds"] == [42]
    assert up.metrics["novelty"].mean == 0.97 and up.metrics["novelty"].std == 0.0
    assert up.metrics["num_sample_modes"].mean == 28.0 and up.denoising == {}
    with store.read_session() as s:
        ev = s.scalars(select(EvaluationRun).where(
            EvaluationRun.id == int(up.run_ids[42]))).one()
        gen = s.scalars(select(GenerationRun).where(
            GenerationRun.id == ev.generation_run_pk)).one()
        assert (ev.evaluator_version, ev.provenance, ev.reference) == (
            "legacy-format-1", "legacy import", "legacy")
        assert gen.provenance == "legacy import" and Path(gen.source_path).name == \
            f"{METHOD}.json"
        versions = {e.evaluator_version for e in s.scalars(select(EvaluationRun))}
    assert versions == {"legacy-format-1", "legacy-format-2"}
    only_v1 = store.method_results(where={"evaluator_version": "legacy-format-1"})
    assert [r.method for r in only_v1] == [METHOD]
    # idempotent
    before = store.counts()
    assert [r.status for r in store.import_result_files([sched])] == ["skipped", "skipped"]
    assert store.counts() == before


def test_v1_and_v2_files_of_one_seed_do_not_both_count(store, sched, tmp_path):
    write(sched / f"{METHOD}.json", v1_doc(seed=42))
    assert store.import_result_files([sched])[0].status == "added"
    v2 = results_document(METHOD, {**_without(v1_config(), "seed"), "seeds": [42]},
                         {42: {**METRICS, "eval/novelty": 0.5}})
    other = tmp_path / "copy" / "loglinear_noise_sc" / f"{METHOD}.json"
    other.parent.mkdir(parents=True)
    write_results_json(other, v2)
    report = store.import_result_files([other])[0]
    assert report.status == "failed" and "with different content" in report.detail
    assert store.method_results(model=MODEL)[0].metrics["novelty"].mean == 0.97


def test_cli_import_reports_a_broken_v1_file_on_one_line(store_url, sched):
    write(sched / f"{METHOD}.json", v1_doc(seed=42))
    bad = write(sched / "broken.json", {**v1_doc(OTHER), "config": _without(v1_config(),
                                                                           "seed")})
    r = CliRunner().invoke(cli, ["import-legacy", str(sched), "--db", store_url,
                                 "--no-mlflow"])
    assert r.exit_code == 1, r.output
    failed = [line for line in r.output.splitlines() if line.startswith("failed:")]
    assert failed == [f"failed: {bad}: format v1 config needs an integer 'seed', got None"]
    assert f"added: {sched / METHOD}.json" in r.output
    assert "1 file(s) added, 0 skipped, 1 failed" in r.output


# --- comparison footnote ------------------------------------------------------------------
def _footer(md: str) -> list[str]:
    return md.split("\n---\n", 1)[1].splitlines()


def test_footnote_and_marks_for_v1_results_from_files(tmp_path):
    folder = tmp_path / "loglinear_noise_sc"
    write(folder / f"{METHOD}.json", v1_doc(seed=42))
    v2 = results_document(OTHER, {**_without(v1_config(top_p=None), "seed"), "seeds": [1, 2]},
                         {1: METRICS, 2: METRICS})
    write_results_json(folder / f"{OTHER}.json", v2)
    results = load_legacy_dir(folder)
    for legacy in (True, False):
        md = comparison_markdown(results, legacy=legacy, generated="2026-01-01 00:00")
        assert _footer(md)[-1] == V1_FOOTNOTE and md.count(V1_FOOTNOTE) == 1
        assert f"**Methods**: {OTHER}, {METHOD} (v1)\n" in md
        config = {row[0]: row[1:] for row in parse_markdown_tables(md)["Configuration"]}
        assert config["Parameter"][:2] == [OTHER, f"{METHOD} (v1)"]
        assert config["Seeds"][:2] == ["[1, 2]", "[42]"]
    assert V1_FOOTNOTE.isascii()
    # without the v1 file: no mark, no footnote
    (folder / f"{METHOD}.json").unlink()
    md = comparison_markdown(load_legacy_dir(folder), legacy=True, generated="x")
    assert V1_FOOTNOTE not in md and "(v1)" not in md and len(_footer(md)) == 2


def test_report_cli_footnotes_imported_v1_results(tmp_path, sched):
    db = str(tmp_path / "store.db")
    write(sched / f"{METHOD}.json", v1_doc(seed=42))
    v2 = results_document(OTHER, {**_without(v1_config(top_p=None), "seed"), "seeds": [1, 2]},
                         {1: METRICS, 2: METRICS})
    write_results_json(sched / f"{OTHER}.json", v2)
    runner = CliRunner()
    assert runner.invoke(cli, ["import-legacy", str(sched), "--db", db,
                               "--no-mlflow"]).exit_code == 0
    out = tmp_path / "report"
    r = runner.invoke(cli, ["report", "--db", db, "--out", str(out), "--legacy", "--no-html"])
    assert r.exit_code == 0, r.output
    md = (out / "comparison.md").read_text()
    assert _footer(md)[-1] == V1_FOOTNOTE and f"{METHOD} (v1)" in md
    # the v2 method alone: no footnote
    r = runner.invoke(cli, ["report", "--db", db, "--out", str(out), "--legacy", "--no-html",
                            "--where", f"method={OTHER}"])
    assert r.exit_code == 0, r.output
    md = (out / "comparison.md").read_text()
    assert V1_FOOTNOTE not in md and "(v1)" not in md


def test_import_logs_the_v1_seed_to_mlflow_tagged_upgraded(tmp_path, monkeypatch):
    from bdgen.pipeline.results_import import IMPORT_EXPERIMENT
    from bdgen.pipeline.workspace import init_workspace
    from bdgen.tracking import Tracker

    ws = init_workspace(tmp_path / "ws", dvc=False)
    src = write(tmp_path / "loglinear_noise_sc" / f"{METHOD}.json", v1_doc(seed=42))
    monkeypatch.chdir(ws.root)
    for key in ("BDGEN_WORKSPACE", "BDGEN_DB_URL", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(key, raising=False)
    r = CliRunner().invoke(cli, ["import-legacy", str(src)])
    assert r.exit_code == 0, r.output
    assert "MLflow: 1 legacy-import run(s) created" in r.output
    tracker = Tracker.for_workspace(ws.root)
    [run_id] = tracker.find_runs(IMPORT_EXPERIMENT, {"bdgen.legacy.upgraded_from_v1": "true"})
    run = tracker.get_run(run_id)
    assert run.data.tags["bdgen.seed"] == "42"
    assert run.data.metrics["novelty"] == 0.97
