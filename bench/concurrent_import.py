"""N concurrent ``bdgen import-legacy`` of one folder: MLflow runs per (file, seed).

    python bench/concurrent_import.py --procs 4 [--folder DIR] [--baseline-src /work/main]

Runs the imports as real processes in a fresh workspace (SQLite store and MLflow store),
then counts MLflow runs: seed runs, distinct (file, seed) pairs, the most runs of one pair,
parents, RUNNING runs, and the wall time. ``--baseline-src`` repeats it with another
checkout's code (e.g. main before the exactly-once links) and prints both side by side.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FOLDER = REPO.parent / "shared" / "legacy_eval_results" / "loglinear_noise_sc"


def _count(uri: str) -> dict:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("bdgen/legacy-graph2plan")
    runs, token = [], None
    while exp is not None:
        page = client.search_runs([exp.experiment_id], max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            break
    pairs = Counter((r.data.tags.get("bdgen.legacy.source_sha256"), r.data.tags.get("bdgen.seed"))
                    for r in runs if r.data.tags.get("bdgen.kind") == "legacy-import")
    return {"seed runs": sum(pairs.values()), "(file, seed) pairs": len(pairs),
            "max runs per pair": max(pairs.values(), default=0),
            "parents": sum(r.data.tags.get("bdgen.kind") == "result" for r in runs),
            "RUNNING": sum(r.info.status == "RUNNING" for r in runs)}


def run(src: Path, folder: Path, procs: int) -> dict:
    env_py = {"PYTHONPATH": str(src), "MLFLOW_DISABLE_TELEMETRY": "true",
              "DVC_NO_ANALYTICS": "1", "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    cli = [sys.executable, "-c", "from bdgen.cli.main import cli; cli()"]
    with tempfile.TemporaryDirectory() as d:
        ws = Path(d) / "ws"
        subprocess.run([*cli, "init", str(ws), "--no-dvc"], env=env_py, check=True,
                       capture_output=True)
        t0 = time.perf_counter()
        ps = [subprocess.Popen([*cli, "import-legacy", str(folder)], cwd=ws, env=env_py,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
              for _ in range(procs)]
        outs = [p.communicate()[0] for p in ps]
        wall = time.perf_counter() - t0
        got = _count(f"sqlite:///{ws / 'mlflow.db'}")
        got["exit codes"] = ",".join(str(p.returncode) for p in ps)
        got["tracebacks"] = sum("Traceback" in o for o in outs)
        got["wall s"] = round(wall, 1)
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--folder", type=Path, default=DEFAULT_FOLDER)
    ap.add_argument("--baseline-src", type=Path, default=None)
    args = ap.parse_args()
    cols = {"this tree": run(REPO, args.folder, args.procs)}
    if args.baseline_src:
        cols["baseline"] = run(args.baseline_src.resolve(), args.folder, args.procs)
    keys = list(next(iter(cols.values())))
    print(f"{args.procs} concurrent imports of {args.folder}")
    print(f"{'':22}" + "".join(f"{c:>14}" for c in cols))
    for k in keys:
        print(f"{k:22}" + "".join(f"{str(v[k]):>14}" for v in cols.values()))


if __name__ == "__main__":
    main()
