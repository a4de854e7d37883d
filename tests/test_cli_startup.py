"""What a stage process pays before any work (issue 17.3): ``dvc repro`` starts one process
per result stage, so the CLI's start-up, the result stage's modules and an opened tracker
must not import mlflow (~1.3 s, plus ~1 s to open its SQLite store); only a job with work
to log does (:meth:`bdgen.tracking.Tracker.connect`). Real interpreters, as a stage runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
