"""``bdgen constraints check`` / ``calibrate`` through the real CLI, on a real workspace
(SQLite store, DVC) holding real generated samples."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_generate import make_checkpoint

from bdgen.cli.main import cli
from bdgen.data.graph import detokenize
from bdgen.data.samples_file import load_samples
from bdgen.data.vocab import VocabConfig
from bdgen.errors import BdgenError
from bdgen.guidance.calibration import load_calibration
from bdgen.guidance.schema import load_constraint_set
from bdgen.pipeline.calibrate import calibrate_constraints, calibration_path
from bdgen.pipeline.tracked_generate import tracked_generate
from bdgen.pipeline.workspace import init_workspace
from bdgen.tracking import dvc_file

REPO = Path(__file__).resolve().parents[1]
CS = """\
constraints:
  - {name: one_kitchen, type: ExactCount, room_type: Kitchen, target: 1}
  - {name: kitchen_near_living, type: RequireAdj, type_a: Kitchen, type_b: LivingRoom}
  - {name: no_bath_kitchen, type: ForbidAdj, type_a: Bathroom, type_b: Kitchen}
  - {name: between_2_and_3_bathrooms, type: CountRange, room_type: Bathroom, lo: 2, hi: 3}
"""
METHOD = "llada_topp0.9_no_remask"


def bdgen(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real console entry point in a subprocess (what a user sees)."""
    full = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-c", "from bdgen.cli.main import cli; cli()",
                           *args], capture_output=True, text=True, env=full)


@pytest.fixture(scope="module")
def ws_with_samples(tmp_path_factory):
    ws = init_workspace(tmp_path_factory.mktemp("calib") / "ws", mlflow=False)
    ckpt = make_checkpoint(ws.root / "ck.pt")
    gens = tracked_generate(ws, ckpt, [METHOD, "random_argmax_no_remask"], [1, 2], 40, 8,
                            device="cpu", no_mlflow=True, renders=0)
    (ws.root / "cs.yaml").write_text(CS)
    return ws, gens[0].model_id, gens


def test_check_prints_the_compiled_set(tmp_path):
    f = tmp_path / "cs.yaml"
    f.write_text(CS)
    r = bdgen("constraints", "check", str(f))
    assert r.returncode == 0, r.stderr
    identity = load_constraint_set(f).identity
    assert f"identity: {identity}" in r.stdout
    assert "between_2_and_3_bathrooms  CountRange  2..3 x Bathroom" in r.stdout
    js = bdgen("constraints", "check", str(f), "--format", "json")
    doc = json.loads(js.stdout)
    assert doc["identity"] == identity and [c["name"] for c in doc["constraints"]][0] == \
        "one_kitchen"


@pytest.mark.parametrize("name,text,expected", [
    ("cs.yaml", CS.replace("Kitchen, target", "Kitchn, target"), "Unknown room type 'Kitchn'"),
    ("cs.yaml", CS.replace("lo: 2, hi: 3", "lo: 3, hi: 2"), "lo (3) > hi (2)"),
    ("cs.yaml", CS.replace("target: 1}", "target: 1, weigth: 2}"), "unknown key 'weigth'"),
    ("cs.yaml", CS + "  - {name: one_kitchen, type: ExactCount, room_type: Kitchen, "
                     "target: 1}\n", "both named 'one_kitchen'"),
    ("cs.yaml", "constraints: [", "not valid YAML"),
    ("cs.txt", CS, "unsupported constraint file format '.txt'"),
    ("cs.json", "{", "not valid JSON"),
    ("cs.yaml", CS + "num_candidates: 0\n", "num_candidates: must be greater than or equal"),
    ("cs.yaml", CS + "alpha: -1\n", "alpha must be a finite number > 0"),
    ("cs.yaml", CS + "calibration_file: nowhere.json\n", "calibration file not found"),
])
def test_check_bad_input_is_one_line_no_traceback(tmp_path, name, text, expected):
    f = tmp_path / name
    f.write_text(text)
    r = bdgen("constraints", "check", str(f))
    assert r.returncode != 0 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def _independent_p90(ws, gens, model_id):
    """The normalisers recomputed by hand from the samples files (numpy percentile)."""
    cs = load_constraint_set(ws.root / "cs.yaml")
    per = [[] for _ in cs.constraints]
    for g in gens:
        if g.method != METHOD:
            continue
        sf = load_samples(ws.root / g.path)
        for t, m in zip(sf.tokens.numpy(), sf.pad_mask.numpy()):
            for vals, v in zip(per, cs.hard(detokenize(t, m, VocabConfig(8)))):
                vals.append(v)
    return {c.name: float(np.percentile([v for v in vals if v > 0], 90)) if any(vals) else 1.0
            for c, vals in zip(cs.constraints, per)}, cs


def test_calibrate_writes_tracks_and_prints_the_identity(ws_with_samples):
    ws, model_id, gens = ws_with_samples
    r = CliRunner().invoke(cli, ["constraints", "calibrate", "--model", model_id,
                                 "--constraints", str(ws.root / "cs.yaml")],
                           env={"BDGEN_WORKSPACE": str(ws.root)})
    assert r.exit_code == 0, r.output
    want, cs = _independent_p90(ws, gens, model_id)
    path = calibration_path(ws, model_id, METHOD, cs)
    doc = json.loads(path.read_text())
    assert doc["normalisers"] == want and list(doc["normalisers"]) == list(cs.names)
    assert doc["source"]["num_graphs"] == 80 and [x["seed"] for x in doc["source"]["runs"]] == \
        [1, 2]
    assert doc["constraint_set"] == cs.identity
    calibrated = load_calibration(path, cs)
    assert doc["identity"] == calibrated.identity and f"identity: {calibrated.identity}" in \
        r.output
    assert dvc_file(path).exists() and not list(path.parent.glob(".*.tmp"))
    # check applies it and prints the same identity
    c = CliRunner().invoke(cli, ["constraints", "check", str(ws.root / "cs.yaml"),
                                 "--calibration", str(path)])
    assert c.exit_code == 0 and f"identity: {calibrated.identity}" in c.output
    # deterministic: a second calibration writes the same bytes
    before = path.read_bytes()
    res = calibrate_constraints(ws, model_id, ws.root / "cs.yaml")
    assert path.read_bytes() == before and res.identity == calibrated.identity
    # --out outside the workspace: written, not DVC-tracked
    out = ws.root.parent / "elsewhere" / "p90.json"
    res = calibrate_constraints(ws, model_id, ws.root / "cs.yaml", out=out)
    assert out.exists() and res.artifact is None


def test_calibrate_bad_input(ws_with_samples, tmp_path):
    ws, model_id, gens = ws_with_samples
    cs = str(ws.root / "cs.yaml")
    cases = [
        ({"model_id": model_id[:-1], "constraints": cs}, "is not in the store; did you mean"),
        ({"model_id": model_id, "constraints": cs, "method": "llada_topp0.8_no_remask"},
         "no succeeded generation run"),
        ({"model_id": model_id, "constraints": cs,
          "method": f"{METHOD}_guided_K4_a0.1_soft_linear"}, "needs unguided samples"),
        ({"model_id": model_id, "constraints": cs, "method": "lada_topp0.9_no_remask"},
         "closest valid name"),
        ({"model_id": model_id, "constraints": cs, "out": tmp_path / "p90.txt"}, "name it *.json"),
        ({"model_id": model_id, "constraints": str(tmp_path / "none.yaml")},
         "constraint file not found"),
    ]
    for kw, expected in cases:
        with pytest.raises(BdgenError) as ei:
            calibrate_constraints(ws, **kw)
        assert expected in str(ei.value), (kw, str(ei.value))
    # a samples file changed after it was recorded, then one missing (DVC-tracked)
    rec = next(g for g in gens if g.method == METHOD)
    path = ws.root / rec.path
    saved = path.read_bytes()
    try:
        path.write_bytes(saved[:-1] + bytes([saved[-1] ^ 1]))
        with pytest.raises(BdgenError, match="has changed since the store recorded it"):
            calibrate_constraints(ws, model_id, cs)
        path.unlink()
        r = bdgen("constraints", "calibrate", "--model", model_id, "--constraints", cs,
                  env={"BDGEN_WORKSPACE": str(ws.root)})
        assert r.returncode != 0 and "is missing (run `dvc pull`" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    finally:
        path.write_bytes(saved)
