"""`dvc repro` against `bdgen sweep` on the same small grid, and the per-stage overhead.

    .venv/bin/python bench/dvc_overhead.py                       # 2 models x 3 methods x 2 seeds
    .venv/bin/python bench/dvc_overhead.py --baseline c8220b9    # + the old layout, same run
    .venv/bin/python bench/dvc_overhead.py --baseline 7289375    # + mlflow at tracker start
    .venv/bin/python bench/dvc_overhead.py --methods 2 --seeds 3 --samples 50

What runs (all on CPU, tiny models, in temporary clones of this repository's HEAD):

1. ``dvc repro train`` (prepare + training; not compared);
2. ``bdgen sweep`` of the grid on the trained checkpoints, into a separate results store and
   MLflow store (its wall time includes its one start-up);
3. ``dvc repro`` of the rest (the grid's stages + the leaderboard), timed;
4. ``dvc repro -f -s leaderboard`` alone, timed (to take it out of the per-stage figure);
5. ``dvc repro -f -s`` of the grid's stages again, timed: every run is in the store, so each
   stage only starts, finds its runs and writes its receipt (a ``dvc repro`` after ``bdgen
   sweep --params params.yaml``); divided by the stages, a stage's cost with nothing to do.

Per-stage overhead = (repro - sweep - leaderboard) / (grid stages - 1): everything a stage
pays that the one-process sweep does not (DVC's bookkeeping, Python start-up, imports of
torch / mlflow / sqlalchemy / dvc, store and tracker set-up), since both do the same work.
With ``--baseline REV`` the same is measured for the pipeline of git revision REV (e.g. the
per-(model, method, seed) generate + evaluate stages before issue 17) in the same run.

Also printed: what one stage process pays before any work (``import`` of the modules a
result stage uses, from a cold interpreter: with work to log, torch + mlflow + dvc; with
none, neither torch nor mlflow nor dvc, since such a stage reads its runs from the store,
bdgen.pipeline.stored_runs, and the tracker connects only for work) and DVC's own cost per
stage (a repro of trivial ``cmd: "true"`` stages), and the load average, since the machine
may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
METHODS = {"random": "random_argmax_no_remask", "llada": "llada_topp0.9_no_remask",
           "remdm": "llada_topp0.9_remdm_confidence_tsw1.0",
           "temp": "llada_temp0.7_no_remask", "conf": "llada_topp0.9_remdm_confidence_tsw0.5"}


def _params(models: int, methods: int, seeds: int, samples: int, steps: int) -> dict:
    train = {"preset": "tiny", "steps": 20, "batch_size": 32, "warmup_steps": 5,
             "val_every": 10, "log_every": 10, "checkpoint_every": 1000, "seed": 42}
    model_defs = {"v1": {"noise": "loglinear", **train},
                  "v2": {"noise": "learned", **train, "is_mode": "off"}}
    return {"workspace": "workspace",
            "data": {"source": "synthetic", "num_graphs": 300, "seed": 0},
            "models": dict(list(model_defs.items())[:models]),
            "methods": dict(list(METHODS.items())[:methods]),
            "seeds": [1 + i for i in range(seeds)],
            "generate": {"num_samples": samples, "steps": steps, "device": "cpu"},
            "leaderboard": {"profile": "configs/pipeline-leaderboard.yaml"}}


def _env(code: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "PYTHONPATH": str(code),
           "DVC_NO_ANALYTICS": "1", "MLFLOW_DISABLE_TELEMETRY": "true", **extra}
    for k in ("BDGEN_WORKSPACE", "MLFLOW_TRACKING_URI", "BDGEN_DB_URL"):
        if k not in extra:
            env.pop(k, None)
    return env


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed in {cwd}:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    return wall, res.stdout


def in_layout_of(params: dict, theirs: dict) -> dict:
    """``params`` (the layout of c8220b9: a full training config per model, methods as a
    key -> name mapping) in the layout of a revision's params.yaml ``theirs``: since issue
    18's exp-show change, a shared ``train`` recipe with per-model overrides and methods
    as a mapping from each name to {}."""
    if "train" not in theirs:
        return params
    models = params["models"]
    shared = {k: v for k, v in next(iter(models.values())).items()
              if k != "noise" and all(m.get(k) == v for m in models.values())}
    new = {"train": shared,
           "models": {key: {k: v for k, v in m.items() if k not in shared}
                      for key, m in models.items()},
           "methods": {m: {} for m in params["methods"].values()}}
    order = [k for k in theirs if k in params or k in new]  # the revision's key order
    return {k: new.get(k, params.get(k)) for k in [*order, *(k for k in params
                                                              if k not in order)]}


def _clone(rev: str, into: Path, params: dict) -> Path:
    subprocess.run(["git", "clone", "-q", str(ROOT), str(into)], check=True)
    subprocess.run(["git", "-C", str(into), "checkout", "-q", rev], check=True)
    theirs = yaml.safe_load((into / "params.yaml").read_text())
    (into / "params.yaml").write_text(yaml.safe_dump(in_layout_of(params, theirs),
                                                     sort_keys=False))
    if not (into / ".dvc").is_dir():
        subprocess.run([str(VENV_BIN / "dvc"), "init", "-q"], cwd=into, check=True,
                       env=_env(into))
    return into


def _stages(stdout: str) -> list[str]:
    return [line.split("'")[1] for line in stdout.splitlines() if line.startswith("Running stage")]


def measure_pipeline(rev: str, tmp: Path, params: dict, sweep: bool) -> dict:
    clone = _clone(rev, tmp / f"clone-{rev[:8]}", params)
    env = _env(clone, DVC_SITE_CACHE_DIR=str(clone / ".site-cache"))
    dvc = str(VENV_BIN / "dvc")
    t_train, _ = _run([dvc, "repro", "train"], clone, env)
    stop_stage_servers(clone, env)  # the timed repro pays the start-up of its own server
    out: dict = {"rev": rev, "train_s": t_train}
    if sweep:  # same grid, one process, its own store and MLflow store
        ws = clone / "workspace"
        ckpts = [str(ws / json.loads((clone / "results" / "models" / f"{k}.json").read_text())
                     ["checkpoint"]) for k in params["models"]]
        senv = _env(ROOT, BDGEN_WORKSPACE=str(ws),
                    BDGEN_DB_URL=f"sqlite:///{tmp / 'sweep-store.db'}",
                    MLFLOW_TRACKING_URI=f"sqlite:///{tmp / 'sweep-mlflow.db'}")
        out["sweep_s"], _ = _run(
            [str(VENV_BIN / "bdgen"), "sweep", "--models", ",".join(ckpts),
             "--methods", ",".join(params["methods"].values()),
             "--seeds", ",".join(map(str, params["seeds"])),
             "--num-samples", str(params["generate"]["num_samples"]),
             "--steps", str(params["generate"]["steps"]), "--device", "cpu"], tmp, senv)
    out["repro_s"], stdout = _run([dvc, "repro"], clone, env)
    out["stages"] = [s for s in _stages(stdout) if s != "leaderboard"]
    out["leaderboard_s"], _ = _run([dvc, "repro", "-f", "-s", "leaderboard"], clone, env)
    out["rerun_s"], _ = _run([dvc, "repro", "-f", "-s", *out["stages"]], clone, env)
    stop_stage_servers(clone, env)
    return out


def stop_stage_servers(clone: Path, env: dict[str, str]) -> None:
    """Stop the warm stage servers (bdgen.pipeline.stage_server; a revision before it has
    no such command, and none to stop)."""
    subprocess.run([str(VENV_BIN / "bdgen"), "pipeline", "servers", "--stop"], cwd=clone,
                   env=env, capture_output=True)


def dvc_cost_per_stage(tmp: Path, n: int = 8) -> float:
    """DVC's own bookkeeping per stage: a repro of ``n`` trivial stages, divided by n."""
    repo = tmp / "trivial"
    repo.mkdir()
    env = _env(ROOT, DVC_SITE_CACHE_DIR=str(repo / ".site-cache"))
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([str(VENV_BIN / "dvc"), "init", "-q"], cwd=repo, check=True, env=env)
    stages = {f"s{i}": {"cmd": f"echo {i} > out{i}.txt", "outs": [f"out{i}.txt"]}
              for i in range(n)}
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    wall, _ = _run([str(VENV_BIN / "dvc"), "repro"], repo, env)
    return wall / n


def import_cost(modules: str) -> float:
    """Wall seconds of a cold interpreter importing ``modules`` (a stage's start-up)."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {modules}"], check=True, env=_env(ROOT))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=2, choices=(1, 2))
    ap.add_argument("--methods", type=int, default=3, choices=range(1, len(METHODS) + 1))
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--samples", type=int, default=30)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--baseline", default=None,
                    help="Also measure the pipeline of this git revision (e.g. main before "
                         "issue 17: c8220b9).")
    ap.add_argument("--keep", action="store_true", help="Keep the temporary clones.")
    args = ap.parse_args()
    params = _params(args.models, args.methods, args.seeds, args.samples, args.steps)
    grid = f"{args.models} model(s) x {args.methods} method(s) x {args.seeds} seed(s) x " \
           f"{args.samples} samples x {args.steps} steps"
    load0 = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="bdgen-dvc-overhead-"))
    try:
        per_dvc = dvc_cost_per_stage(tmp)
        imports = {
            "bdgen CLI": import_cost("bdgen.cli.pipeline_cmd"),
            "leaderboard stage": import_cost("bdgen.pipeline.stages, bdgen.pipeline.store, "
                                             "bdgen.report.tables, bdgen.report.ranking"),
            "result stage": import_cost("bdgen.pipeline.tracked_generate, "
                                        "bdgen.pipeline.tracked_evaluate, mlflow, dvc.repo"),
            "result stage with nothing to do": import_cost(
                "bdgen.pipeline.stages, bdgen.pipeline.store, bdgen.pipeline.stored_runs"),
            "torch": import_cost("torch"), "mlflow": import_cost("mlflow"),
        }
        rows = [measure_pipeline("HEAD", tmp, params, sweep=True)]
        if args.baseline:
            rows.append(measure_pipeline(args.baseline, tmp, params, sweep=False))
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    load1 = os.getloadavg()
    sweep_s = rows[0]["sweep_s"]
    print(f"grid: {grid}; load average before {load0[0]:.2f}, after {load1[0]:.2f} "
          f"({os.cpu_count()} CPUs)")
    print(f"DVC bookkeeping per trivial stage: {per_dvc:.2f} s")
    print("cold-interpreter import (a stage's start-up before any work): "
          + ", ".join(f"{k} {v:.2f} s" for k, v in imports.items()))
    print(f"bdgen sweep (one process, same grid, generate + evaluate): {sweep_s:.1f} s")
    print(f"{'pipeline':<10} {'grid stages':>11} {'dvc repro':>10} {'leaderboard':>12} "
          f"{'overhead/stage':>15} {'repro/sweep':>12} {'re-run/stage':>13}")
    for r in rows:
        n = len(r["stages"])
        over = (r["repro_s"] - sweep_s - r["leaderboard_s"]) / max(n - 1, 1)
        print(f"{r['rev'][:10]:<10} {n:>11} {r['repro_s']:>9.1f}s {r['leaderboard_s']:>11.1f}s "
              f"{over:>14.2f}s {r['repro_s'] / sweep_s:>11.2f}x {r['rerun_s'] / n:>12.2f}s")
    print("re-run/stage: `dvc repro -f -s` of the grid's stages with every run in the store "
          "(a stage with nothing to do)")


if __name__ == "__main__":
    main()
