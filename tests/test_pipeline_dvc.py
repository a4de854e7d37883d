"""`dvc repro` of the repository's pipeline in a temporary clone, on a tiny params.yaml:
it ends with the leaderboard, a second repro does nothing, and changing one method's
parameter makes only that method's stages (and the leaderboard) stale."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bdgen.pipeline.stages import DVC_METRICS

REPO = Path(__file__).resolve().parents[1]

TINY_PARAMS = {
    "workspace": "workspace",
    "data": {"source": "synthetic", "num_graphs": 120, "seed": 0},
    "train": {"preset": "tiny", "steps": 10, "batch_size": 16, "warmup_steps": 2,
              "val_every": 5, "log_every": 5, "checkpoint_every": 1000},
    "models": {"v1": {"noise": "loglinear"}},
    "methods": {"random_argmax_no_remask": {}, "llada_topp0.9_no_remask": {}},
    "seeds": [1, 2],
    "generate": {"num_samples": 16, "steps": 5, "device": "cpu"},
    "leaderboard": {"profile": "configs/pipeline-leaderboard.yaml"},
}


def _plot_rows(clone: Path) -> dict[str, dict[str, str]]:
    with open(clone / "results" / "plots" / "headline.csv", newline="") as f:
        return {row["result"]: row for row in csv.DictReader(f)}


def _dvc(clone: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
           "DVC_SITE_CACHE_DIR": str(clone / ".site-cache")}
    env.pop("BDGEN_WORKSPACE", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("BDGEN_DB_URL", None)
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=clone, env=env,
                          capture_output=True, text=True, timeout=900)


def _result_stage_modules(clone: Path, model: str, method: str, out: Path) -> list[str]:
    """Run dvc.yaml's result stage command for (model, method) in a real interpreter,
    writing its receipt and headline under ``out``; the top-level modules it imported."""
    argv = ["pipeline", "result", method, "--model", f"results/models/{model}.json",
            "--out", str(out / "receipt.json"), "--headline", str(out / "headline.json")]
    # sys.path without '': the bdgen the stages run (PYTHONPATH / installed), not the clone's
    code = ("import json, sys\nsys.path.remove('')\nfrom bdgen.cli.main import cli\n"
            f"cli({argv!r}, prog_name='bdgen', standalone_mode=False)\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n")
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    for k in ("BDGEN_WORKSPACE", "MLFLOW_TRACKING_URI", "BDGEN_DB_URL"):
        env.pop(k, None)
    res = subprocess.run([sys.executable, "-c", code], cwd=clone, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return json.loads(res.stdout.splitlines()[-1])


@pytest.mark.slow
def test_dvc_repro_in_a_fresh_clone(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    if not (clone / "dvc.yaml").exists():
        pytest.skip("dvc.yaml not committed in this checkout")
    (clone / "params.yaml").write_text(yaml.safe_dump(TINY_PARAMS, sort_keys=False))

    first = _dvc(clone, "repro")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    tail = first.stdout[first.stdout.rindex("Running stage 'leaderboard'"):]
    assert "random_argmax_no_remask" in tail and "llada_topp0.9_no_remask" in tail
    rows = _plot_rows(clone)
    assert set(rows) == {"v1/random_argmax_no_remask", "v1/llada_topp0.9_no_remask"}
    metrics = json.loads((clone / "results/metrics/v1/llada_topp0.9_no_remask.json")
                         .read_text())
    assert set(metrics) == set(DVC_METRICS)  # a handful of headline keys per result
    assert 0.0 <= metrics["validity_rate"] <= 1.0
    assert float(rows["v1/llada_topp0.9_no_remask"]["validity_rate"]) == \
        metrics["validity_rate"]
    # the one DVC metrics file: the leaderboard's top result, its headline, the count
    summary = json.loads((clone / "results/summary.json").read_text())
    assert list(summary) == ["top", *DVC_METRICS, "results"] and summary["results"] == 2
    board = (clone / "results/leaderboard.md").read_text()  # rows in rank order
    first = min(("random_argmax_no_remask", "llada_topp0.9_no_remask"), key=board.index)
    assert summary["top"] == f"v1/{first}"
    assert {k: summary[k] for k in DVC_METRICS} == {
        k: float(rows[f"v1/{first}"][k]) for k in DVC_METRICS}
    receipt = json.loads((clone / "results/runs/v1/llada_topp0.9_no_remask.json").read_text())
    assert [r["seed"] for r in receipt["runs"]] == [1, 2]  # all seeds in one stage
    assert (clone / "workspace" / "bdgen.toml").exists()  # made by the first stage

    second = _dvc(clone, "repro")
    assert second.returncode == 0
    assert "Running stage" not in second.stdout

    # A result stage whose runs the store has (`dvc repro -f`, or after a `bdgen sweep`)
    # writes the same receipt without importing mlflow (tracking stays on).
    again = _result_stage_modules(clone, "v1", "llada_topp0.9_no_remask", tmp_path / "again")
    assert json.loads((tmp_path / "again" / "receipt.json").read_text()) == receipt
    assert "mlflow" not in again and "dvc" not in again

    params = yaml.safe_load((clone / "params.yaml").read_text())
    params["methods"] = {"random_argmax_no_remask": {}, "llada_topp0.95_no_remask": {}}
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = _dvc(clone, "status", "--json")  # the new result, and the ranking of the grid
    assert set(json.loads(status.stdout)) == {"result@v1-llada_topp0.95_no_remask",
                                              "leaderboard"}
    third = _dvc(clone, "repro")
    assert third.returncode == 0, third.stdout[-3000:] + third.stderr[-3000:]
    ran = {line.split("'")[1] for line in third.stdout.splitlines()
           if line.startswith("Running stage")}
    assert ran == {"result@v1-llada_topp0.95_no_remask", "leaderboard"}
    assert set(_plot_rows(clone)) == {"v1/random_argmax_no_remask",
                                      "v1/llada_topp0.95_no_remask"}

    # the views: metrics, params and plots of DVC itself
    shown = _dvc(clone, "metrics", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    exp = _dvc(clone, "exp", "show", "--csv")
    assert exp.returncode == 0, exp.stderr
    header = next(csv.reader(exp.stdout.splitlines()))
    assert "top" in header and not any("methods" in c for c in header)
    assert not any("metrics/" in c for c in header)  # no per-result metric columns
    plots = _dvc(clone, "plots", "show", "-o", str(tmp_path / "plots"))
    assert plots.returncode == 0, plots.stdout + plots.stderr
    html = (tmp_path / "plots" / "index.html").read_text()
    for metric in DVC_METRICS:
        assert metric in html
    assert "v1/llada_topp0.95_no_remask" in html  # the data is inlined


def test_methods_are_names_mapped_to_empty_or_a_list_and_the_old_mapping_is_refused(tmp_path):
    from bdgen.errors import BdgenError
    from bdgen.pipeline.stages import load_params, method_names

    names = ["random_argmax_no_remask", "llada_topp0.9_no_remask"]
    assert method_names({"methods": dict.fromkeys(names, {})}) == names
    assert method_names({"methods": names}) == names
    old = {**TINY_PARAMS, "methods": {"random": names[0], "llada": names[1]}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(old))
    with pytest.raises(BdgenError, match="old form: the names are the keys"):
        load_params(tmp_path / "params.yaml")
    with pytest.raises(BdgenError, match="distinct"):
        method_names({"methods": [names[0], names[0]]})
    shipped = load_params(REPO / "params.yaml")  # the quick start's own file
    assert len(method_names(shipped)) == len(shipped["methods"]) >= 1
