"""Guided evaluation (GUIDANCE_SPEC G7.2): the constraint/* metrics on hand-built graphs,
their registry entries, and `bdgen evaluate` measuring a samples file's own constraint set
or (for unguided baselines) the set of --constraints, with bad input refused in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bdgen.data.dataset import prepare_synthetic
from bdgen.data.graph import Graph, tokenize_many
from bdgen.data.samples_file import SamplesFile, save_samples
from bdgen.data.vocab import NODE_MASK, NODE_TYPES, VocabConfig
from bdgen.diffusion.method import Method
from bdgen.errors import BdgenError
from bdgen.eval import registry
from bdgen.eval.arrays import GraphArrays
from bdgen.eval.constraints import constraint_metrics
from bdgen.pipeline.constraint_sets import load_constraints
from bdgen.pipeline.evaluate import evaluate_samples_files, write_result

CS2_YAML = """\
constraints:
  - {type: ExactCount, name: one_kitchen, room_type: Kitchen, target: 1}
  - {type: RequireAdj, name: kitchen_near_living, type_a: Kitchen, type_b: LivingRoom}
  - {type: ForbidAdj, name: no_bath_kitchen, type_a: Bathroom, type_b: Kitchen}
  - {type: CountRange, name: between_2_and_3_bathrooms, room_type: Bathroom, lo: 2, hi: 3}
"""
GUIDED = "llada_topp0.9_no_remask_guided_K4_a0.1_soft_linear"
BASELINE = "llada_topp0.9_no_remask"
T = {name: i for i, name in enumerate(NODE_TYPES)}


@pytest.fixture(scope="module")
def cs_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("cs") / "cs2.yaml"
    p.write_text(CS2_YAML)
    return p


@pytest.fixture(scope="module")
def cs(cs_file):
    return load_constraints(cs_file)


def _graphs() -> list[Graph]:
    k, lr, b = T["Kitchen"], T["LivingRoom"], T["Bathroom"]
    return [
        Graph((k, lr, b), ((0, 1, 0),)),                             # only 1 bathroom
        Graph((k, k, b, b, lr), ((0, 2, 1), (1, 3, 2), (0, 3, 3))),  # 2 kitchens, 3 bad edges
        Graph((lr, b), ()),                                           # becomes undecodable
    ]


def test_constraint_metrics_on_hand_built_graphs(cs):
    vocab = VocabConfig(8)
    tokens, pad = tokenize_many(_graphs(), vocab)
    tokens[2, 0] = NODE_MASK  # a MASK in a real slot: scored as the empty graph (G7.1)
    ga = GraphArrays.from_tokens(tokens, pad, vocab)
    m = constraint_metrics(ga, cs)
    keys = [k for c in cs.names for k in (f"constraint/satisfaction_{c}",
                                          f"constraint/mean_violation_{c}",
                                          f"constraint/mean_violation_when_failed_{c}",
                                          f"constraint/violation_histogram_{c}")]
    assert list(m) == keys + ["constraint/satisfaction_overall"]  # 4n + 1, legacy order
    # violations: one_kitchen [0, 1, 1], kitchen_near_living [0, 1, 1],
    # no_bath_kitchen [0, 3, 0], between_2_and_3_bathrooms [1, 0, 2]
    assert m["constraint/satisfaction_one_kitchen"] == pytest.approx(1 / 3)
    assert m["constraint/mean_violation_kitchen_near_living"] == pytest.approx(2 / 3)
    assert m["constraint/mean_violation_when_failed_one_kitchen"] == 1.0
    assert m["constraint/satisfaction_no_bath_kitchen"] == pytest.approx(2 / 3)
    assert m["constraint/mean_violation_no_bath_kitchen"] == 1.0
    assert m["constraint/mean_violation_when_failed_no_bath_kitchen"] == 3.0
    assert m["constraint/violation_histogram_no_bath_kitchen"] == {"0": 2, "1": 0, "2": 0,
                                                                   "3+": 1}
    assert m["constraint/violation_histogram_between_2_and_3_bathrooms"] == {
        "0": 1, "1": 1, "2": 1, "3+": 0}
    assert m["constraint/mean_violation_when_failed_between_2_and_3_bathrooms"] == 1.5
    assert m["constraint/satisfaction_overall"] == 0.0
    # nobody fails: when-failed is 0.0 (G7.2), everything satisfied
    ok = GraphArrays.from_graphs([Graph((T["Kitchen"], T["LivingRoom"], T["Bathroom"],
                                         T["Bathroom"]), ((0, 1, 4),))], vocab)
    m = constraint_metrics(ok, cs)
    assert m["constraint/satisfaction_overall"] == 1.0
    assert m["constraint/mean_violation_when_failed_no_bath_kitchen"] == 0.0


def test_registry_defines_every_legacy_constraint_key(legacy_dir):
    folder = Path(legacy_dir).parent / "guided_loglinear"
    if not folder.is_dir():
        pytest.skip("guided legacy results absent")
    per_seed, summary = set(), set()
    for f in folder.rglob("*.json"):
        data = json.loads(f.read_text())
        per_seed |= {k for m in data["per_seed"].values() for k in m
                     if k.startswith("constraint/")}
        summary |= {k for k in data["summary"] if k.startswith("constraint/")}
    assert (len(per_seed), len(summary)) == (21, 36)  # G7.2: 5 constraint names
    for key in summary:
        d = registry.lookup(key)
        assert d.name == key == d.legacy_key and d.group == "constraint"
        assert d.percent == ("satisfaction" in key)
        assert d.displayed == ("histogram" not in key)
    assert registry.lookup("constraint/satisfaction_overall").display == "**Satisfaction (all)**"
    rows = registry.constraint_rows(summary)
    assert rows[0] == "constraint/satisfaction_overall" and len(rows) == 1 + 5 * 3
    assert rows[1:6] == sorted(k for k in summary if "/satisfaction_" in k
                               and "overall" not in k)
    assert all("when_failed" in r for r in rows[-5:])
    with pytest.raises(KeyError):
        registry.lookup("constraint/violation_histogram_x/4")


# --- bdgen evaluate ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dataset():
    return prepare_synthetic(800, seed=9)


def _model(dataset):
    return {"id": "v1-loglinear-test", "sha256": "0" * 64, "version": "v1",
            "noise": {"type": "loglinear", "eps": 1e-3}, "dataset_hash": dataset.dataset_hash,
            "dataset_id": dataset.dataset_id, "n_max": 8,
            "split": {"seed": 42, "fractions": [0.8, 0.1, 0.1]}}


def write_samples(dataset, directory: Path, method: str, constraints=None,
                  seeds=(42, 123), n=50) -> list[Path]:
    val = dataset.split("val")
    paths = []
    for seed in seeds:
        idx = torch.randperm(len(val), generator=torch.Generator().manual_seed(seed))[:n]
        sf = SamplesFile(val.tokens[idx], val.pad_mask[idx], val.num_rooms[idx], method,
                         Method.parse(method).legacy_config(), _model(dataset), seed, 100, n,
                         {"wall_s": 1.0}, constraints=constraints)
        path = directory / f"seed-{seed}_n{n}_s100.pt"
        save_samples(sf, path)
        paths.append(path)
    return paths


@pytest.fixture()
def ws(tmp_path, dataset) -> Path:
    (tmp_path / "bdgen.toml").write_text("")
    dataset.save(tmp_path / "data" / f"{dataset.dataset_id}.pt")
    return tmp_path


def test_evaluate_measures_the_files_set_or_the_given_one(ws, dataset, cs):
    own = {**cs.to_dict(), "identity": cs.identity}
    guided = write_samples(dataset, ws / "samples" / "guided", GUIDED, own)
    base = write_samples(dataset, ws / "samples" / "base", BASELINE)
    (g,) = evaluate_samples_files(guided, data_dir=ws / "data", denoising=False)
    assert g.constraint_set_id == cs.identity
    val = dataset.split("val")
    idx = torch.randperm(len(val), generator=torch.Generator().manual_seed(42))[:50]
    want = constraint_metrics(GraphArrays.from_tokens(val.tokens[idx].numpy(),
                                                      val.pad_mask[idx].numpy(),
                                                      dataset.vocab), cs)
    assert {k: v for k, v in g.per_seed["42"].items() if k.startswith("constraint/")} == want
    mr = g.to_method_result()
    assert mr.constraint_set == cs.identity
    assert mr.metrics["constraint/violation_histogram_one_kitchen/0"].n == 2
    assert g.legacy_config()["num_constraints"] == 4
    # a baseline: no constraint metrics, unless measured against a set
    (plain,) = evaluate_samples_files(base, data_dir=ws / "data", denoising=False)
    assert plain.constraints is None
    assert not any(k.startswith("constraint/") for k in plain.per_seed["42"])
    (measured,) = evaluate_samples_files(base, data_dir=ws / "data", denoising=False,
                                         constraints=cs)
    assert measured.constraint_set_id == cs.identity
    assert {k: v for k, v in measured.per_seed["42"].items()
            if k.startswith("constraint/")} == want  # the same samples, the same set
    assert write_result(measured).name == f"{BASELINE}.cs-{cs.identity[:12]}.eval.json"
    assert write_result(plain).name == f"{BASELINE}.eval.json"
    legacy_file = write_result(measured, ws / "loglinear_noise_sc", legacy=True)
    doc = json.loads(legacy_file.read_text())
    assert doc["per_seed"]["42"]["constraint/satisfaction_overall"] == want[
        "constraint/satisfaction_overall"]
    assert doc["config"]["constraint_set"] == cs.identity
    # bdgen's legacy-format file imports back as the same result, with the same set
    from bdgen.store.api import Store

    store = Store.open(f"sqlite:///{ws / 'imported.db'}")
    try:
        (rep,) = store.import_result_files([legacy_file])
        assert rep.status == "added", rep.line()
        (res,) = store.method_results()
    finally:
        store.close()
    assert res.constraint_set == cs.identity and res.method == BASELINE
    assert res.metrics["constraint/satisfaction_overall"] == measured.to_method_result(
    ).metrics["constraint/satisfaction_overall"]
    # a guided file is only measured against its own set
    other = load_constraints(_write(ws / "other.yaml", CS2_YAML.replace("target: 1",
                                                                          "target: 2")))
    with pytest.raises(BdgenError, match="drawn with constraint set"):
        evaluate_samples_files(guided, data_dir=ws / "data", denoising=False,
                               constraints=other)


def test_tampered_or_missing_constraint_copy_is_refused(ws, dataset, cs):
    bad = {**cs.to_dict(), "identity": "f" * 64}
    files = write_samples(dataset, ws / "samples", GUIDED, bad, seeds=(42,))
    with pytest.raises(BdgenError, match="recorded identity"):
        evaluate_samples_files(files, data_dir=ws / "data", denoising=False)
    bare = write_samples(dataset, ws / "bare", GUIDED, None, seeds=(42,))
    for given in (None, cs):
        with pytest.raises(BdgenError, match="carry no constraint set"):
            evaluate_samples_files(bare, data_dir=ws / "data", denoising=False,
                                   constraints=given)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _bdgen(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("bdgen")
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DVC_NO_ANALYTICS": "1",
           "BDGEN_WORKSPACE": str(cwd)}
    env.pop("BDGEN_DB_URL", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([str(exe), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize("text,needle", [
    ("constraints: [ {type: ExactCount, name: one_kitchen", "not valid YAML"),
    ("constraints:\n  - {type: ExactCount, name: k, room_type: Kitchn, target: 1}\n",
     "Unknown room type 'Kitchn'"),
    ("constraints:\n  - {type: Exactly, name: k, room_type: Kitchen, target: 1}\n", "Exactly"),
])
def test_cli_bad_constraint_file_is_one_line_and_changes_nothing(ws, dataset, text, needle):
    base = write_samples(dataset, ws / "samples", BASELINE, seeds=(42,))
    from bdgen.store.api import Store

    store = Store.open(f"sqlite:///{ws / 'bdgen.db'}")
    store.close()
    bad = _write(ws / "bad.yaml", text)
    before = _tree(ws)
    for args in (["evaluate", str(base[0]), "--no-denoising", "--constraints", str(bad)],
                 ["evaluate", "--pending", "--no-mlflow", "--constraints", str(bad)]):
        r = _bdgen(args, ws)
        assert r.returncode != 0, r.stdout
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], r.stderr
        assert "Traceback" not in r.stderr and r.stdout == ""
        assert _tree(ws) == before  # no result file, the store untouched
    if "Kitchn" in text:
        r = _bdgen(["evaluate", str(base[0]), "--no-denoising", "--calibration", str(bad)], ws)
        assert r.returncode != 0 and "--calibration needs --constraints" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and _tree(ws) == before


def test_cli_evaluate_with_constraints_writes_the_measured_result(ws, dataset, cs, cs_file):
    base = write_samples(dataset, ws / "samples", BASELINE, seeds=(42, 123))
    r = _bdgen(["evaluate", str(ws / "samples"), "--no-denoising", "--constraints",
                str(cs_file)], ws)
    assert r.returncode == 0, r.stderr
    out = base[0].parent / f"{BASELINE}.cs-{cs.identity[:12]}.eval.json"
    doc = json.loads(out.read_text())
    assert doc["constraints"]["identity"] == cs.identity
    header = r.stdout.splitlines()[0]
    assert "satisfaction (all)" in header and cs.identity[:12] in r.stdout
    assert doc["summary"]["constraint/satisfaction_overall"]["n"] == 2
    assert np.isfinite(doc["summary"]["constraint/mean_violation_no_bath_kitchen"]["mean"])


def test_tracked_evaluate_records_the_set_in_the_store(ws, dataset, cs, cs_file):
    from bdgen.pipeline.tracked_evaluate import tracked_evaluate
    from bdgen.pipeline.workspace import Workspace
    from bdgen.store.api import Store
    from bdgen.util.hashing import file_sha256

    own = {**cs.to_dict(), "identity": cs.identity}
    guided = write_samples(dataset, ws / "samples" / "g", GUIDED, own, seeds=(42,))
    base = write_samples(dataset, ws / "samples" / "b", BASELINE, seeds=(42,))
    store = Store.open(f"sqlite:///{ws / 'bdgen.db'}")
    try:
        store.get_or_create_model("v1-loglinear-test", "v1", "loglinear")
        g = store.start_generation_run("v1-loglinear-test", GUIDED, 42, 50, 100,
                                       constraint_set=cs.identity, no_mlflow=True)
        store.finish_generation_run(g, file_sha256(guided[0]), "samples/g/" + guided[0].name)
        b = store.start_generation_run("v1-loglinear-test", BASELINE, 42, 50, 100,
                                       no_mlflow=True)
        store.finish_generation_run(b, file_sha256(base[0]), "samples/b/" + base[0].name)
    finally:
        store.close()
    w = Workspace.find(ws)
    tracked_evaluate(w, [g, b], no_mlflow=True, plots=False)
    tracked_evaluate(w, [b], no_mlflow=True, plots=False, constraints=cs)
    again = tracked_evaluate(w, [b], no_mlflow=True, plots=False, constraints=cs)
    assert again[0].skipped  # measured against this set already
    store = Store.open(f"sqlite:///{ws / 'bdgen.db'}")
    try:
        results = store.method_results()
        from sqlalchemy import select

        from bdgen.store.models import EvaluationRun, GenerationRun

        with store.read_session() as s:
            evs = sorted((e.generation_run_pk, e.constraint_set)
                         for e in s.scalars(select(EvaluationRun)))
            gens = {r.id: r.constraint_set for r in s.scalars(select(GenerationRun))}
    finally:
        store.close()
    assert [(r.method, r.constraint_set) for r in results] == [
        (BASELINE, ""), (BASELINE, cs.identity), (GUIDED, cs.identity)]
    assert gens[g] == cs.identity and gens[b] is None and len(gens) == 3  # + the measurement
    assert (g, cs.identity) in evs and (b, None) in evs and len(evs) == 3
    plain, measured, guided_r = results
    assert "constraint/satisfaction_overall" not in plain.metrics
    assert measured.metrics["constraint/satisfaction_overall"].n == 1
    assert guided_r.metrics["constraint/satisfaction_overall"].mean == \
        measured.metrics["constraint/satisfaction_overall"].mean  # same samples, same set
