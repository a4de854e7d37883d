"""The whole study, timed: a models x methods x seeds grid generated, recorded (DVC + MLflow
+ store), evaluated and denoised end to end.

    python bench/study.py --device cuda [--engine local|ray] [--no-seed-batch]
    python bench/study.py --device cpu [--skip-dvc] [--skip-ray]
    python bench/study.py --smoke                 # seconds-sized CPU run of every variant

``--device cuda``: the real grid on one GPU: 2 small models (trained here first, briefly,
on the synthetic set: the bench needs no network and no files), the 22 legacy methods,
5 seeds, 1000 samples x 100 steps, one ``bdgen sweep`` with tracking (aim: under 5 min on
one H200, vs about an hour for the original workflow). ``--device cpu``: 2 tiny models x 3
methods x 2 seeds x 100 samples, side by side in one run: ``dvc repro`` of the project's
pipeline (dvc.yaml + params.yaml in a temporary copy), the one-process sweep, and the
sweep on a local Ray cluster; per-run overhead of each.

Printed per variant: wall time, runs per minute and the breakdown (busy seconds summed over
workers: sampling, recording = samples file registration with ``dvc add`` + MLflow run +
renders, evaluation incl. its MLflow run, denoising, start-up = engine + worker start). The
overhead per run is (wall - the one-process sweep's sampling + evaluation + denoising
seconds) / runs: the same work is in every variant, so what is left is what the
variant adds (process start-ups, imports, DVC's bookkeeping, scheduling).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

T_START = time.perf_counter()
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

import torch  # noqa: E402

from bdgen.diffusion.method import LEGACY_GRID  # noqa: E402
from bdgen.diffusion.trainer import TrainConfig  # noqa: E402
from bdgen.pipeline.data import prepare_dataset  # noqa: E402
from bdgen.pipeline.store import open_store  # noqa: E402
from bdgen.pipeline.sweep import SweepSummary, sweep  # noqa: E402
from bdgen.pipeline.tracked_train import tracked_train  # noqa: E402
from bdgen.pipeline.workspace import Workspace, init_workspace  # noqa: E402

T_IMPORTS = time.perf_counter() - T_START
CPU_METHODS = ("random_argmax_no_remask", "llada_topp0.9_no_remask",
               "llada_topp0.9_remdm_confidence_tsw1.0")
PHASES = ("sampling", "tracking", "evaluation", "denoising", "open", "load")


def sizes(args) -> dict:
    if args.smoke:
        return {"preset": "tiny", "train_steps": 10, "graphs": 200, "methods": CPU_METHODS[:2],
                "seeds": [1], "n": 16, "steps": 5}
    if args.device == "cuda":
        return {"preset": "small", "train_steps": args.train_steps or 400, "graphs": 25000,
                "methods": LEGACY_GRID, "seeds": [42, 123, 456, 789, 1337],
                "n": args.num_samples or 1000, "steps": args.steps or 100}
    return {"preset": "tiny", "train_steps": args.train_steps or 30, "graphs": 300,
            "methods": CPU_METHODS, "seeds": [1, 2], "n": args.num_samples or 100,
            "steps": args.steps or 50}


#: ``dvc add`` of every samples file is part of the recording; where DVC is not installed
#: (the GPU image) the workspaces are made with ``--no-dvc``: files are hashed, not added.
HAVE_DVC = importlib.util.find_spec("dvc") is not None


def train_models(root: Path, sz: dict, device: str) -> list[Path]:
    """Two models (loglinear and linear noise) trained briefly: the study's inputs."""
    ws = init_workspace(root / "train", dvc=HAVE_DVC)
    _, data = prepare_dataset("synthetic", num_graphs=sz["graphs"], seed=0, workspace=ws)
    out = []
    for noise in ("loglinear", "linear"):
        cfg = TrainConfig(steps=sz["train_steps"], batch_size=64, warmup_steps=5,
                          checkpoint_every=10**6, val_every=10**6, log_every=50, seed=0)
        rec = tracked_train(ws, data, noise=noise, model=sz["preset"], config=cfg,
                            device=device, progress=False, no_mlflow=True)
        out.append(ws.root / rec.checkpoint)
    return out


def fresh_workspace(root: Path, sz: dict, ckpts: list[Path]) -> tuple[Workspace, list[str]]:
    ws = init_workspace(root, dvc=HAVE_DVC)
    prepare_dataset("synthetic", num_graphs=sz["graphs"], seed=0, workspace=ws)
    models = []
    for i, ck in enumerate(ckpts):
        dst = ws.root / "artifacts" / "models" / f"given-{i}" / ck.name
        dst.parent.mkdir(parents=True)
        shutil.copy2(ck, dst)
        models.append(str(dst))
    return ws, models


def run_sweep(name: str, root: Path, sz: dict, ckpts: list[Path], args, **kw) -> dict:
    ws, models = fresh_workspace(root, sz, ckpts)
    t0 = time.perf_counter()
    s: SweepSummary = sweep(ws, models, sz["methods"], sz["seeds"], sz["n"], sz["steps"],
                            device=args.device, **kw)
    wall = time.perf_counter() - t0
    if not s.complete:
        print(f"  {name}: {s.status_line()}; errors: {s.errors[:3]}", flush=True)
    return {"name": name, "wall": wall, "runs": len(s.generated), "seconds": s.seconds,
            "ws": ws, "summary": s}


def run_dvc(root: Path, sz: dict) -> dict:
    """`dvc repro` of the project's pipeline on the same grid, in a temporary copy; the
    data and training stages run first, untimed."""
    import yaml

    clone = root / "dvc"
    clone.mkdir()
    for f in ("dvc.yaml", "params.yaml", ".gitignore", ".dvcignore"):
        if (REPO / f).exists():
            shutil.copy2(REPO / f, clone / f)
    shutil.copytree(REPO / "configs", clone / "configs")
    params = yaml.safe_load((clone / "params.yaml").read_text())
    params["data"] = {"source": "synthetic", "num_graphs": sz["graphs"], "seed": 0}
    params["models"] = {k: {"noise": k, "preset": sz["preset"], "steps": sz["train_steps"],
                            "batch_size": 64, "warmup_steps": 5, "val_every": 10**6,
                            "log_every": 50, "checkpoint_every": 10**6, "seed": 0}
                        for k in ("loglinear", "linear")}
    params["methods"] = {m: {} for m in sz["methods"]}
    params["seeds"] = list(sz["seeds"])
    params["generate"] = {"num_samples": sz["n"], "steps": sz["steps"], "device": "cpu"}
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "PYTHONPATH": str(REPO), "DVC_SITE_CACHE_DIR": str(clone / ".site-cache")}
    for k in ("BDGEN_WORKSPACE", "MLFLOW_TRACKING_URI", "BDGEN_DB_URL"):
        env.pop(k, None)

    def sh(*cmd: str) -> None:
        res = subprocess.run(cmd, cwd=clone, env=env, capture_output=True, text=True)
        if res.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stdout[-2000:]}{res.stderr[-2000:]}")

    sh("git", "init", "-q")
    sh(sys.executable, "-m", "dvc", "init", "-q")
    sh(sys.executable, "-m", "dvc", "repro", "prepare-data", "train")
    bdgen = str(Path(sys.executable).parent / "bdgen")
    sh(bdgen, "pipeline", "servers", "--stop")  # the timed repro starts its own server
    t0 = time.perf_counter()
    sh(sys.executable, "-m", "dvc", "repro")
    wall = time.perf_counter() - t0
    sh(bdgen, "pipeline", "servers", "--stop")
    runs = len(params["models"]) * len(sz["methods"]) * len(sz["seeds"])
    return {"name": "dvc repro", "wall": wall, "runs": runs, "seconds": {}}


def check_seed_batch(res: dict, sz: dict, ckpts: list[Path], device: str) -> None:
    """The study's seed-batched files against each seed sampled alone (two methods)."""
    from bdgen.pipeline.generate import generate

    ws: Workspace = res["ws"]
    with open_store(workspace=ws) as store:
        infos = [store.generation_run(g) for g in res["summary"].generated]
    with tempfile.TemporaryDirectory() as d:
        methods = [m for m in ("llada_topp0.9_no_remask",
                               "llada_topp0.9_remdm_confidence_tsw1.0") if m in sz["methods"]]
        alone = generate(str(ws.root / "artifacts" / "models" / "given-0" / ckpts[0].name),
                         methods, sz["seeds"], sz["n"], sz["steps"], device=device,
                         out_dir=d, progress=False)
        same = sum(r.sha256 == i.samples_sha256 for r in alone for i in infos
                   if (i.model_id, i.method, i.seed) == (r.model_id, r.method, r.seed))
    print(f"seed batches: {same}/{len(alone)} samples files byte-identical to the seed "
          "sampled alone", flush=True)


def report(results: list[dict], base_work: float | None) -> None:
    head = (f"{'variant':16s} {'wall s':>8s} {'runs':>5s} {'runs/min':>8s} "
            + " ".join(f"{p:>10s}" for p in ("sampling", "recording", "evaluation",
                                              "denoising", "start-up"))
            + f" {'overhead/run':>12s}")
    print(head)
    print("-" * len(head))
    for r in results:
        s = r["seconds"]
        cells = [s.get("sampling"), s.get("tracking"), s.get("evaluation"),
                 s.get("denoising"), (s.get("start-up", 0.0) + s.get("open", 0.0)
                                      + s.get("load", 0.0)) if s else None]
        over = (f"{(r['wall'] - base_work) / r['runs']:11.2f}s"
                if base_work is not None and r["runs"] else f"{'-':>12s}")
        print(f"{r['name']:16s} {r['wall']:8.1f} {r['runs']:5d} "
              f"{r['runs'] / r['wall'] * 60:8.1f} "
              + " ".join(f"{c:10.1f}" if c is not None else f"{'-':>10s}" for c in cells)
              + f" {over}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--smoke", action="store_true", help="tiny CPU run of every variant")
    ap.add_argument("--engine", choices=["local", "ray"], default="local",
                    help="--device cuda: the sweep's engine")
    ap.add_argument("--seed-batch", action=argparse.BooleanOptionalAction, default=None,
                    help="all seeds of a (model, method) in one batch [cuda: on, cpu: off]")
    ap.add_argument("--eval-workers", type=int, default=None, help="[cores - 2]")
    ap.add_argument("--train-steps", type=int, default=None)
    ap.add_argument("--num-samples", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--renders", type=int, default=6, help="bubble renders per MLflow run")
    ap.add_argument("--skip-dvc", action="store_true")
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--keep", type=Path, default=None, help="keep the workspaces here")
    args = ap.parse_args()
    if args.smoke:
        args.device = "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available")
    sz = sizes(args)
    seed_batch = args.seed_batch if args.seed_batch is not None else args.device == "cuda"
    workers = args.eval_workers or max(1, (os.cpu_count() or 2) - 2)
    root = args.keep or Path(tempfile.mkdtemp(prefix="bdgen-study-"))
    root.mkdir(parents=True, exist_ok=True)
    gpu = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    cells = 2 * len(sz["methods"]) * len(sz["seeds"])
    print(f"study: 2 {sz['preset']} models x {len(sz['methods'])} methods x "
          f"{len(sz['seeds'])} seeds = {cells} runs, {sz['n']} samples x {sz['steps']} steps; "
          f"device {gpu}, {os.cpu_count()} cores, {workers} evaluation workers, seed batches "
          f"{'on' if seed_batch else 'off'}; imports {T_IMPORTS:.1f} s", flush=True)
    if not HAVE_DVC:
        print("DVC is not installed here: workspaces without DVC (samples files hashed, not "
              "`dvc add`ed; recording figures exclude DVC)", flush=True)
        args.skip_dvc = True
    t = time.perf_counter()
    ckpts = train_models(root, sz, args.device)
    print(f"setup (not timed below): dataset + 2 models trained in "
          f"{time.perf_counter() - t:.1f} s", flush=True)
    common = {"seed_batch": seed_batch, "eval_workers": workers, "renders": args.renders,
              "echo": lambda line: print("  " + line, flush=True)}
    results: list[dict] = []
    if args.device == "cuda":
        kw = {"engine": args.engine} if args.engine == "ray" else {}
        res = run_sweep(f"sweep ({args.engine})", root / "sweep", sz, ckpts, args,
                        **common, **kw)
        results.append(res)
        report(results, None)
        wall = res["wall"]
        print(f"whole study: {wall:.1f} s = {wall / 60:.2f} min (aim < 5 min), "
              f"{res['runs'] / wall * 60:.1f} runs/min; complete: "
              f"{res['summary'].complete}", flush=True)
        if seed_batch:
            check_seed_batch(res, sz, ckpts, args.device)
    else:
        local = run_sweep("sweep (local)", root / "local", sz, ckpts, args, **common)
        results.append(local)
        if not args.skip_ray:
            results.append(run_sweep("sweep (ray)", root / "ray", sz, ckpts, args,
                                     engine="ray", num_cpus=os.cpu_count(), **common))
        if not args.skip_dvc:
            results.insert(0, run_dvc(root, sz))
        s = local["seconds"]
        work = s.get("sampling", 0.0) + s.get("evaluation", 0.0) + s.get("denoising", 0.0)
        print(f"work in every variant (one-process sweep's sampling + evaluation + "
              f"denoising busy seconds): {work:.1f} s")
        report(results, work)
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
