"""``bdgen generate`` with guided methods through the real CLI (subprocess): self-describing
samples files, the constraint set's identity on the tracked run, one-line refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_generate import make_checkpoint

from bdgen.data.samples_file import load_samples
from bdgen.diffusion.guided import DIAGNOSTICS
from bdgen.guidance.calibration import load_calibration
from bdgen.guidance.schema import load_constraint_set
from bdgen.pipeline.tracked_generate import tracked_generate
from bdgen.pipeline.workspace import init_workspace
from bdgen.tracking import Tracker

REPO = Path(__file__).resolve().parents[1]
CS = """\
constraints:
  - {name: two_dining, type: ExactCount, room_type: DiningRoom, target: 2}
  - {name: no_dining_wallin, type: ForbidAdj, type_a: DiningRoom, type_b: Wall-in}
"""
GUIDED = "llada_topp0.9_no_remask_guided_K4_a0.1_soft_linear"
CONF = "llada_topp0.9_remdm_confidence_tsw1.0_guided_K3_a0.5_soft_linear_protect"


def bdgen(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-c", "from bdgen.cli.main import cli; cli()",
                           *map(str, args)], capture_output=True, text=True, env=full)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("guided")
    ck = make_checkpoint(d / "ck.pt")
    (d / "cs.yaml").write_text(CS)
    (d / "calib.json").write_text(json.dumps({"two_dining": 2.0, "no_dining_wallin": 3.0}))
    return d, ck


def test_guided_generate_writes_a_self_describing_file(setup):
    d, ck = setup
    out = d / "out"
    r = bdgen("generate", "--model", ck, "--method", GUIDED, "--method", CONF, "--seeds", "1",
              "--num-samples", 6, "--steps", 8, "--device", "cpu", "--out-dir", out,
              "--constraints", d / "cs.yaml", "--calibration", d / "calib.json")
    assert r.returncode == 0, r.stderr
    files = sorted(out.rglob("*.pt"))
    assert len(files) == 2
    cs = load_calibration(d / "calib.json", load_constraint_set(d / "cs.yaml"))
    for f in files:
        sf = load_samples(f)
        assert f.parent.name == f"cs-{cs.identity[:12]}"
        assert sf.constraints == {**cs.to_dict(), "identity": cs.identity}
        assert [c["p90"] for c in sf.constraints["constraints"]] == [2.0, 3.0]
        assert set(sf.diagnostics) == set(DIAGNOSTICS) | {"violation/two_dining",
                                                         "violation/no_dining_wallin"}
        assert all(len(v) == 8 for v in sf.diagnostics.values())
    # the guided method name parses back to all of its settings
    assert {f.parent.parent.name for f in files} == {GUIDED, CONF}


@pytest.mark.parametrize("args,expected", [
    (["--method", GUIDED], "is guided: give its constraint set with --constraints"),
    (["--method", "llada_topp0.9_no_remask", "--constraints", "CS"],
     "--constraints applies to guided methods only"),
    (["--method", GUIDED, "--constraints", "BADROOM"], "Unknown room type 'Kitchn'"),
    (["--method", GUIDED, "--constraints", "MALFORMED"], "not valid YAML"),
    (["--method", "llada_topp0.9_no_remask_guided_K0_a0.1_soft_linear", "--constraints", "CS"],
     "K (num_candidates) must be an integer in [1, 1024], got 0"),
    (["--method", "llada_topp0.9_no_remask_guided_K4_a0.0_soft_linear", "--constraints", "CS"],
     "alpha must lie in (0.0, 1000.0], got 0.0"),
    (["--method", GUIDED, "--constraints", "CS", "--calibration", "BADCALIB"],
     "no normaliser for no_dining_wallin"),
    (["--method", "llada_topp0.9_no_remask_guided_K4_a0.1_soft_linear_protect",
      "--constraints", "CS"], "change only remasking"),
])
def test_bad_input_is_one_line_nonzero_and_writes_nothing(setup, args, expected):
    d, ck = setup
    (d / "bad.yaml").write_text(CS.replace("DiningRoom, target", "Kitchn, target"))
    (d / "malformed.yaml").write_text("constraints: [")
    (d / "badcalib.json").write_text(json.dumps({"two_dining": 2.0}))
    subst = {"CS": d / "cs.yaml", "BADROOM": d / "bad.yaml", "MALFORMED": d / "malformed.yaml",
             "BADCALIB": d / "badcalib.json"}
    out = d / "never"
    r = bdgen("generate", "--model", ck, "--seeds", "1", "--num-samples", 3, "--steps", 4,
              "--device", "cpu", "--out-dir", out, *[subst.get(a, a) for a in args])
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and expected in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists()


def test_tracked_guided_run_records_the_constraint_set_and_diagnostics(tmp_path):
    ws = init_workspace(tmp_path / "ws")
    ck = make_checkpoint(ws.root / "ck.pt")
    (ws.root / "cs.yaml").write_text(CS)
    (rec,) = tracked_generate(ws, ck, [CONF], [3], 5, 6, device="cpu", renders=0,
                              constraints=ws.root / "cs.yaml")
    cs = load_constraint_set(ws.root / "cs.yaml")
    assert f"cs-{cs.identity[:12]}" in rec.path
    tracker = Tracker.for_workspace(ws.root)
    run = tracker.get_run(rec.mlflow_run_id)
    assert run.data.params["constraint_set"] == cs.identity
    assert run.data.tags["bdgen.constraint_set"] == cs.identity
    assert run.data.params["constraints.two_dining.type"] == "ExactCount"
    history = tracker._client.get_metric_history(rec.mlflow_run_id, "guidance/ess")
    assert sorted(m.step for m in history) == list(range(6))
    sf = load_samples(ws.root / rec.path)
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == sf.diagnostics["ess"]
    arts = [a.path for a in tracker._client.list_artifacts(rec.mlflow_run_id, "plots")]
    assert "plots/guidance.png" in arts
    # the same method with another constraint set is another run; the same set is done
    (ws.root / "cs2.yaml").write_text(CS.replace("target: 2", "target: 3"))
    (other,) = tracked_generate(ws, ck, [CONF], [3], 5, 6, device="cpu", renders=0,
                                constraints=ws.root / "cs2.yaml")
    assert not other.skipped and other.generation_run_id != rec.generation_run_id
    assert other.path != rec.path
    (again,) = tracked_generate(ws, ck, [CONF], [3], 5, 6, device="cpu", renders=0,
                                constraints=ws.root / "cs.yaml")
    assert again.skipped and again.generation_run_id == rec.generation_run_id
