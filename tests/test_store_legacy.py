"""Legacy import: the real loglinear_noise_sc results, reproduced cell by cell from the store."""
# ruff: noqa: F811  (pytest fixtures imported from _store_support are redefined as arguments)

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest
from _store_support import store, store_url  # noqa: F401  (fixtures)
from click.testing import CliRunner

from bdgen.cli.main import cli
from bdgen.errors import BdgenError
from bdgen.eval.registry import GROUP_TITLES, displayed_metrics, lookup
from bdgen.store.queries import metric_aggregates
from bdgen.store.results_import import model_identity

MODEL = "legacy-v1-loglinear"


def legacy_cell(mean: float, std: float, percent: bool) -> str:
    """A comparison.md cell, formatted as spec §7.6 says the legacy table did."""
    if percent:
        return f"{100 * mean:.1f}%" if std == 0 else f"{100 * mean:.1f} +/- {100 * std:.1f}%"
    if float(mean).is_integer() and std == 0:
        return str(int(mean))
    if float(mean).is_integer() and float(std).is_integer():
        return f"{int(mean)} +/- {int(std)}"
    small = 0 < abs(mean) < 0.01
    if std == 0:
        return f"{mean:.6f}" if small else f"{mean:.4f}"
    return f"{mean:.6f} +/- {std:.6f}" if small else f"{mean:.4f} +/- {std:.4f}"


def parse_comparison(path: Path) -> tuple[list[str], dict[str, dict[str, list[str]]]]:
    """(methods, {section title: {row label: cells}}) of a legacy comparison.md."""
    methods: list[str] = []
    sections: dict[str, dict[str, list[str]]] = {}
    title = None
    for line in path.read_text().splitlines():
        if line.startswith("## "):
            title = line[3:].strip()
            sections[title] = {}
        elif line.startswith("|") and title is not None:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if cells[0] in ("Parameter", "Metric"):
                methods = cells[1:]
            elif not set(cells[0]) <= set("-:"):
                sections[title][cells[0]] = cells[1:]
    return methods, sections


def _config_cell(value) -> str:
    return "--" if value is None else str(value)


def test_import_reproduces_every_value_of_comparison_md(store, legacy_dir):
    reports = store.import_result_files([legacy_dir])
    assert [r.status for r in reports] == ["added"] * 22, [r.line() for r in reports]
    methods, sections = parse_comparison(Path(legacy_dir) / "comparison.md")
    results = {r.method: r for r in store.method_results(model=MODEL)}
    assert sorted(results) == methods and len(methods) == 22
    checked = 0
    # configuration rows
    config_rows = {"Seeds": "seeds", "Num samples": "num_samples",
                   "Sampling steps": "sampling_steps", "Temperature": "temperature",
                   "Top-p": "top_p", "Unmasking mode": "unmasking_mode",
                   "Remasking": "remasking_enabled", "Remasking strategy": "remasking_strategy",
                   "Remasking eta": "remasking_eta", "Remasking t_switch": "remasking_t_switch",
                   "Checkpoint": "checkpoint"}
    for label, cells in sections.pop("Configuration").items():
        for method, cell in zip(methods, cells):
            assert _config_cell(results[method].config[config_rows[label]]) == cell, (label,
                                                                                      method)
            checked += 1
    # denoising rows (one block per legacy file)
    for label, cells in sections.pop(GROUP_TITLES["denoising"]).items():
        name = lookup(f"denoise/{label}").name
        for method, cell in zip(methods, cells):
            assert f"{results[method].denoising[name]:.4f}" == cell, (label, method)
            checked += 1
    # metric rows: mean and population std per metric and method
    by_display = {m.display: m for m in displayed_metrics()}
    for title, rows in sections.items():
        assert title in GROUP_TITLES.values(), title
        for label, cells in rows.items():
            d = by_display[label]
            for method, cell in zip(methods, cells):
                agg = results[method].metrics[d.name]
                assert legacy_cell(agg.mean, agg.std, d.percent) == cell, (label, method)
                checked += 1
    assert checked == 11 * 22 + 20 * 22 + 33 * 22


def test_aggregates_match_the_legacy_summaries(store, legacy_dir):
    store.import_result_files([legacy_dir])
    results = {r.method: r for r in store.method_results(model=MODEL)}
    with store.read_session() as s:
        sql = {(a.method, a.metric): a for a in metric_aggregates(s, model=MODEL)}
    n = 0
    for f in sorted(Path(legacy_dir).glob("*.json")):
        data = json.loads(f.read_text())
        r = results[data["method"]]
        assert r.seeds == tuple(data["config"]["seeds"]) == (42, 123, 456, 789, 1337)
        assert len(r.metrics) == len(data["summary"]) == 96
        for key, stored in data["summary"].items():
            name = lookup(key).name
            for agg in (r.metrics[name], sql[(data["method"], name)]):
                assert math.isclose(agg.mean, stored["mean"], rel_tol=0, abs_tol=1e-12)
                assert math.isclose(agg.std, stored["std"], rel_tol=0, abs_tol=1e-12)
                n += 1
        per_seed = store.per_seed_values(MODEL, data["method"], "eval/node_js")
        assert per_seed == {int(k): v["eval/node_js"] for k, v in data["per_seed"].items()}
    assert n == 22 * 96 * 2


def test_import_is_idempotent_and_records_provenance(store, legacy_dir):
    files = sorted(Path(legacy_dir).glob("*.json"))[:3]
    assert {r.status for r in store.import_result_files(files)} == {"added"}
    before = store.counts()
    again = store.import_result_files(files)
    assert [r.status for r in again] == ["skipped"] * 3
    assert all(r.skipped == 5 and r.added == 0 for r in again)
    assert store.counts() == before
    from sqlalchemy import select

    from bdgen.store.models import EvaluationRun, GenerationRun, Model

    with store.read_session() as s:
        gen = s.scalars(select(GenerationRun)).first()
        _ = gen.series  # load while the session is open
        ev = s.scalars(select(EvaluationRun)).first()
        model = s.scalars(select(Model)).one()
    assert gen.provenance == ev.provenance == "legacy import"
    assert Path(gen.source_path).name == files[0].name and len(gen.source_sha256) == 64
    assert gen.samples_path is None and gen.series.num_samples == 1000
    assert gen.series.steps == 100
    assert (model.model_id, model.version, model.noise_schedule, model.checkpoint_path) == (
        MODEL, "v1", "loglinear", "checkpoint_final.pt")


def _bad_tree(tmp_path: Path, legacy_dir: str) -> Path:
    d = tmp_path / "eval_results" / "loglinear_noise_sc"
    d.mkdir(parents=True)
    good = Path(legacy_dir) / "llada_argmax_no_remask.json"
    shutil.copy(good, d / good.name)
    data = json.loads(good.read_text())
    (d / "a_broken.json").write_text("{not json")
    (d / "b_v1.json").write_text(json.dumps({**data, "format_version": 1}))
    (d / "b_v3.json").write_text(json.dumps({**data, "format_version": 3}))
    unknown = json.loads(good.read_text())
    unknown["per_seed"]["42"]["eval/bogus_metric"] = 1.0
    (d / "c_unknown.json").write_text(json.dumps(unknown))
    edited = json.loads(good.read_text())
    edited["summary"]["eval/novelty"]["mean"] = 0.5
    (d / "d_edited.json").write_text(json.dumps(edited))
    renamed = {**data, "method": "random_argmax_no_remask"}
    (d / "e_renamed.json").write_text(json.dumps(renamed))
    nan = json.loads(good.read_text())
    nan["per_seed"]["123"]["eval/node_js"] = "NaN"
    (d / "f_string.json").write_text(json.dumps(nan))
    (d / "notes.md").write_text("not a result")
    return d


def test_malformed_files_are_reported_and_good_ones_imported(store_url, tmp_path, legacy_dir):
    d = _bad_tree(tmp_path, legacy_dir)
    r = CliRunner().invoke(cli, ["import-legacy", str(d.parent), "--db", store_url])
    assert r.exit_code == 1, r.output
    lines = {Path(line.split(": ")[1]).name: line for line in r.output.splitlines()
             if line.startswith(("added:", "failed:", "skipped:"))}
    assert lines["llada_argmax_no_remask.json"].startswith("added:")
    expect = {"a_broken.json": "not valid JSON",
              "b_v1.json": "format v1 file has unexpected keys 'per_seed'",
              "b_v3.json": "format_version 3 is not supported",
              "c_unknown.json": "unknown metric 'eval/bogus_metric'",
              "d_edited.json": "summary eval/novelty mean", "e_renamed.json": "file names",
              "f_string.json": "non-numeric value 'NaN'"}
    for name, needle in expect.items():
        assert lines[name].startswith("failed:") and needle in lines[name], lines[name]
    assert "1 file(s) added, 0 skipped, 7 failed" in r.output
    from bdgen.store.api import Store

    with Store.open(store_url) as s:
        assert s.counts()["evaluation_runs"] == 5  # only the good file's 5 seeds
        assert s.counts()["metric_values"] == 5 * 96
    # the same identities from different content are refused, not merged
    other = json.loads((d / "llada_argmax_no_remask.json").read_text())
    other["timestamp"] = "2030-01-01T00:00:00"
    copy = tmp_path / "copy" / "loglinear_noise_sc" / "llada_argmax_no_remask.json"
    copy.parent.mkdir(parents=True)
    copy.write_text(json.dumps(other))
    r = CliRunner().invoke(cli, ["import-legacy", str(copy), "--db", store_url])
    assert r.exit_code == 1 and "with different content" in r.output
    r = CliRunner().invoke(cli, ["import-legacy", str(tmp_path / "missing"), "--db", store_url])
    assert r.exit_code == 1 and "no such file" in r.output


@pytest.mark.parametrize("folder, method, config, expected", [
    ("loglinear_noise_sc", "llada_argmax_no_remask", {}, ("legacy-v1-loglinear", "v1")),
    ("linear", "llada_argmax_no_remask", {}, ("legacy-v1-linear", "v1")),
    ("loglinear_noise_sc", "v2_llada_topp0.9_no_remask", {}, ("legacy-v2-learned", "v2")),
    ("loglinear", "llada_topp0.9_no_remask", {"is_v2": True}, ("legacy-v2-learned", "v2")),
    ("learned_noise_sc", "v2_llada_topp0.9_no_remask", {}, ("legacy-v2-learned", "v2")),
])
def test_model_identity_from_folder_and_prefix(tmp_path, folder, method, config, expected):
    path = tmp_path / "eval_results" / folder / "round1_guid" / f"{method}.json"
    assert model_identity(path, method, config)[:2] == expected


def test_model_identity_needs_a_schedule(tmp_path):
    with pytest.raises(BdgenError, match="schedule"):
        model_identity(tmp_path / "x.json", "llada_argmax_no_remask", {})
    assert model_identity(tmp_path / "x.json", "llada_argmax_no_remask", {},
                          schedule="cosine")[0] == "legacy-v1-cosine"


def test_cells_formatter_examples():
    assert legacy_cell(28.6, 1.2, False) == "28.6000 +/- 1.2000"
    assert legacy_cell(1.0, 0.0, True) == "100.0%"
    assert legacy_cell(0.005, 0.0, False) == "0.005000"
    assert re.fullmatch(r"\d+", legacy_cell(5.0, 0.0, False))
