"""bench/guided.py and bench/guided_study.py run end to end at tiny sizes on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, str(REPO / "bench" / script), *args],
                          capture_output=True, text=True, env=env, timeout=900)


def test_guided_bench_prints_guided_next_to_unguided():
    r = run("guided.py", "--device", "cpu", "--preset", "tiny", "--num-samples", "8",
            "--steps", "6", "--ks", "1,3", "--threads", "1")
    assert r.returncode == 0, r.stderr
    rows = [ln.split() for ln in r.stdout.splitlines() if ln.startswith("llada_")]
    names = [row[0] for row in rows]
    assert names == ["llada_topp0.9_no_remask",
                     "llada_topp0.9_no_remask_guided_K1_a0.01_soft_linear",
                     "llada_topp0.9_no_remask_guided_K3_a0.01_soft_linear",
                     "llada_topp0.9_remdm_confidence_tsw1.0",
                     "llada_topp0.9_remdm_confidence_tsw1.0_guided_K1_a0.01_soft_linear",
                     "llada_topp0.9_remdm_confidence_tsw1.0_guided_K3_a0.01_soft_linear"]
    assert all(float(row[3]) > 0 for row in rows)  # samples/s


def test_guided_study_tiny(tmp_path):
    out = tmp_path / "study"
    r = run("guided_study.py", "--device", "cpu", "--tiny", "--no-quality", "--out", str(out))
    assert r.returncode == 0, r.stderr
    md = (out / "guided_study.md").read_text()
    assert "TINY SMOKE RUN" in md and "## G8 sanity checks" in md
    for title in ("Unguided baselines", "R1 K x alpha", "R2 K sweep", "R3 alpha sweep",
                  "R4 soft vs hard"):
        assert f"## {title}" in md
    res = json.loads((out / "results.json").read_text())
    checks = {c["check"].split(" (")[0]: c["ok"] for c in res["checks"]}
    assert checks["K = 1 leaves the samples unchanged"] is True
    assert checks["ESS = K once decoded without remasking"] is True
    assert (out / "calibration.json").exists() and (out / "constraints.yaml").exists()
    # a second run reuses every stage's output and prints the same table
    again = run("guided_study.py", "--device", "cpu", "--tiny", "--no-quality", "--out",
                str(out))
    assert again.returncode == 0 and (out / "guided_study.md").read_text() == md
