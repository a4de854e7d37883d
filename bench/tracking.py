"""Tracking overhead per generate / evaluate run on the default local stores.

    .venv/bin/python bench/tracking.py [--runs 10]

Simulates what a job adds on top of the science: open one MLflow run with ~40 params, log
the per-seed metric block (~120 metrics) and throughput in one batch, tag store row ids and
artifact hashes, `dvc add` a samples-sized file (~50 KB) and log one small PNG artifact.
Prints the median/max seconds per run (goal: < 1 s) and the cost of the PNGs logged with
runs. One-off costs (importing mlflow,
creating the SQLite tracking DB) are printed separately: they are paid once per process or
once per workspace, not per run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()

    t0 = time.perf_counter()
    import mlflow  # noqa: F401

    t_import = time.perf_counter() - t0
    from bdgen.pipeline.workspace import init_workspace
    from bdgen.tracking import Tracker, track

    root = Path(tempfile.mkdtemp(prefix="bdgen-bench-")) / "ws"
    t0 = time.perf_counter()
    ws = init_workspace(root)
    t_init = time.perf_counter() - t0
    tracker = Tracker.for_workspace(ws.root)
    params = {"model": {f"p{i}": i for i in range(20)},
              "sampling": {f"s{i}": i * 0.5 for i in range(20)}}
    metrics = {f"eval/metric_{i}": i / 7 for i in range(120)}
    png = root / "plot.png"
    png.write_bytes(os.urandom(20_000))

    gen, ev = [], []
    for i in range(args.runs):
        sample = ws.samples_path("v1-bench", "llada_topp0.9", i, 50, 20)
        sample.parent.mkdir(parents=True, exist_ok=True)
        sample.write_bytes(os.urandom(50_000))
        t0 = time.perf_counter()
        ref = track(ws.root, sample)
        with tracker.open_run("generate", f"bench/{i}", "bdgen/bench", params,
                              {"bdgen.seed": i, **ref.tags("samples")}) as run:
            run.log_metrics({"gen/samples_per_s": 100.0, "gen/wall_s": 1.0})
            run.set_tags({"bdgen.generation_run_id": i})
            run.log_artifact(png, "plots")
        gen.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        with tracker.open_run("evaluate", f"bench/{i}", "bdgen/bench", params,
                              {"bdgen.seed": i, "bdgen.generation_run_id": i}) as run:
            run.log_metrics(metrics)
            run.set_tags({"bdgen.evaluation_run_id": i})
            run.log_artifact(png, "plots")
        ev.append(time.perf_counter() - t0)

    from bdgen.data.graph import Graph
    from bdgen.pipeline.plots import metric_bars, render_bubbles

    graphs = [Graph((0, 1, 2, 3), ((0, 1, 4), (1, 2, 0), (2, 3, 7)))] * 6
    t0 = time.perf_counter()
    render_bubbles(graphs, root / "warm.png")
    t_mpl = time.perf_counter() - t0
    plots = []
    for _ in range(5):
        t0 = time.perf_counter()
        render_bubbles(graphs, root / "b.png", "bench")
        metric_bars({f"m{i}": i / 8 for i in range(8)}, root / "m.png", "bench")
        plots.append(time.perf_counter() - t0)

    print(f"one-off: import mlflow {t_import:.2f} s, bdgen init (git+dvc+store+mlflow db) "
          f"{t_init:.2f} s")
    for name, xs in (("generate (run + dvc add + artifact)", gen),
                     ("evaluate (run + 120 metrics + artifact)", ev)):
        print(f"{name}: median {statistics.median(xs):.3f} s, max {max(xs):.3f} s "
              f"over {len(xs)} runs")
    print(f"plots (6 bubble renders + metric bars): median {statistics.median(plots):.3f} s "
          f"(first call, importing matplotlib: {t_mpl:.2f} s)")


if __name__ == "__main__":
    main()
