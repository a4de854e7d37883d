"""What a stage process pays before any work (issue 17.3): ``dvc repro`` starts one process
per result stage, so the CLI's start-up, the result stage's modules and an opened tracker
must not import mlflow (~1.3 s, plus ~1 s to open its SQLite store); only a job with work
to log does (:meth:`bdgen.tracking.Tracker.connect`); and a result stage whose runs are all
in the store imports no torch either (:func:`bdgen.pipeline.stored_runs.stored_result`).
Real interpreters, as a stage runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from _study_support import TINY_PIPELINE

ROOT = Path(__file__).resolve().parents[1]

# The result stage's command up to its work: `bdgen --help`, the stage's own --help (the
# `pipeline` group's module loaded), the modules stage_result imports, the tracker a job
# opens (tracking on: reachability checked) and then connects once it has work.
_STAGE_START = """
import json, sys
from bdgen.cli.main import cli

def heavy():
    return sorted(m for m in ("mlflow", "dvc", "pandas") if m in sys.modules)

for argv in (["--help"], ["pipeline", "result", "--help"]):
    try:
        cli(argv, prog_name="bdgen")
    except SystemExit as exc:
        assert exc.code == 0, (argv, exc.code)
out = {"cli": heavy()}
import bdgen.pipeline.stages, bdgen.pipeline.store
import bdgen.pipeline.tracked_evaluate, bdgen.pipeline.tracked_generate
out["stage modules"] = heavy()
from bdgen.tracking import Tracker
tracker = Tracker.for_workspace(sys.argv[1])
out["tracker opened"] = heavy()
tracker.connect()
out["tracker connected"] = heavy()
print(json.dumps(out))
"""


def test_result_stage_start_up_imports_no_mlflow_until_the_tracker_connects(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)  # the workspace's own SQLite store
    res = subprocess.run([sys.executable, "-c", _STAGE_START, str(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    seen = json.loads(res.stdout.splitlines()[-1])
    assert seen["cli"] == seen["stage modules"] == seen["tracker opened"] == []
    assert "mlflow" in seen["tracker connected"]  # the check sees an import when there is one
    assert (tmp_path / "mlflow.db").is_file()  # connecting opened (created) the store


# dvc.yaml's result stage command, run as `dvc repro` runs it (tracking on); prints the
# heavy modules the process imported.
_RESULT_STAGE = """
import json, sys
from bdgen.cli.main import cli

cli(["pipeline", "result", sys.argv[1], "--model", "results/models/v1.json",
     "--out", sys.argv[2] + "/receipt.json", "--headline", sys.argv[2] + "/headline.json"],
    prog_name="bdgen", standalone_mode=False)
print(json.dumps(sorted(m for m in ("torch", "mlflow", "dvc", "pandas") if m in sys.modules)))
"""


def _result_stage(repo: Path, method: str, out: Path) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_DISABLE_TELEMETRY": "true",
           "DVC_NO_ANALYTICS": "1"}
    for k in ("BDGEN_WORKSPACE", "MLFLOW_TRACKING_URI", "BDGEN_DB_URL"):
        env.pop(k, None)  # the workspace's own stores
    out.mkdir()
    res = subprocess.run([sys.executable, "-c", _RESULT_STAGE, method, str(out)], cwd=repo,
                         env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return json.loads(res.stdout.splitlines()[-1])


@pytest.mark.slow
def test_a_result_stage_with_nothing_to_do_imports_no_torch_and_writes_the_same_files(
        tmp_path, tiny_pipeline):
    """`dvc repro -f`, or `dvc repro` after `bdgen sweep --params params.yaml`: every run of
    the result is in the store, so its stage reads them from there without torch (nor
    mlflow, dvc, pandas) and writes byte for byte the receipt and headline the stage that
    did the work wrote."""
    shutil.copytree(tiny_pipeline, tmp_path, dirs_exist_ok=True, symlinks=True)
    method = "llada_topp0.9_no_remask"

    worked = _result_stage(tmp_path, method, tmp_path / "worked")
    assert {"torch", "mlflow"} <= set(worked)  # the check sees the imports when there are
    again = _result_stage(tmp_path, method, tmp_path / "again")
    assert again == []
    for name in ("receipt.json", "headline.json"):
        assert (tmp_path / "again" / name).read_bytes() == \
            (tmp_path / "worked" / name).read_bytes()
    receipt = json.loads((tmp_path / "again" / "receipt.json").read_text())
    assert [r["seed"] for r in receipt["runs"]] == [1, 2]

    # one seed more: work again, done by the jobs (torch), the stored seeds reused
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**TINY_PIPELINE, "seeds": [1, 2, 3]},
                                                         sort_keys=False))
    assert "torch" in _result_stage(tmp_path, method, tmp_path / "more")
    more = json.loads((tmp_path / "more" / "receipt.json").read_text())
    assert [r["seed"] for r in more["runs"]] == [1, 2, 3]
    assert more["runs"][:2] == receipt["runs"]
