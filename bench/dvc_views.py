"""How wide DVC's own views are at a given grid, for this dvc.yaml and a baseline revision's.

    .venv/bin/python bench/dvc_views.py                        # 2 models x 22 methods x 5 seeds
    .venv/bin/python bench/dvc_views.py --methods 3 --seeds 2  # the quick-start grid
    .venv/bin/python bench/dvc_views.py --baseline c8220b9     # default baseline: before issue 18

Nothing is trained: for each layout, a scratch git + DVC repository gets the revision's
dvc.yaml, a params.yaml of the grid and the metrics / plot files the pipeline's stages write
(fabricated values, the real file layout and keys), committed; then one method's param and
one result's metric are changed in the workspace. Printed per layout:
``dvc exp show --csv`` column count, ``dvc metrics show`` lines and longest line,
``dvc metrics diff`` / ``dvc params diff`` longest line, ``dvc dag`` width, and whether
``dvc plots show`` wrote HTML with the data. Dependency-hash columns of ``dvc exp show``
(one per dependency file, they need a dvc.lock) are not included here.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DVC = str(Path(sys.executable).parent / "dvc")
OLD_KEYS = ("validity_rate", "inside_validity", "novelty", "mode_coverage_weighted",
            "node_tv", "edge_tv", "conditional_edge_tv_weighted", "transitivity_score")
NEW_KEYS = ("validity_rate", "inside_validity", "mode_coverage_weighted", "node_tv", "edge_tv")


def legacy_methods() -> list[str]:
    """The 22 methods of the legacy study (2 unmasking orders x 11 variants)."""
    variants = ["argmax_no_remask", "topp0.9_no_remask",
                *(f"topp0.9_remdm_cap_eta{e}" for e in ("0.2", "0.4", "0.6", "0.8", "1.0")),
                *(f"topp0.9_remdm_confidence_tsw{t}" for t in ("0.3", "0.5", "0.7", "1.0"))]
    return [f"{u}_{v}" for u in ("random", "llada") for v in variants]


def _params(models: int, methods: list[str], seeds: int) -> dict:
    train = {"preset": "tiny", "steps": 300, "batch_size": 64, "warmup_steps": 30,
             "val_every": 100, "log_every": 50, "checkpoint_every": 1000, "seed": 42}
    return {"workspace": "workspace",
            "data": {"source": "synthetic", "num_graphs": 2000, "seed": 0},
            "models": dict(list({"v1": {"noise": "loglinear", **train},
                                 "v2": {"noise": "learned", **train, "is_mode": "off"}
                                 }.items())[:models]),
            "methods": {f"m{i:02d}": m for i, m in enumerate(methods)},
            "seeds": [42, 123, 456, 789, 1337][:seeds],
            "generate": {"num_samples": 1000, "steps": 100, "device": "cpu"},
            "leaderboard": {"profile": "configs/pipeline-leaderboard.yaml"}}


def _write(path: Path, obj: dict | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj, indent=2, sort_keys=True))


def _fabricate(repo: Path, layout: str, params: dict, rng: random.Random) -> Path:
    """The metrics (and plot) files of ``layout``; returns one metrics file to change."""
    def vals(keys: tuple[str, ...]) -> dict[str, float]:
        return {k: round(rng.random(), 6) for k in keys}
    first = None
    if layout == "old":
        summary = {}
        for m in params["models"]:
            for key, name in params["methods"].items():
                for s in params["seeds"]:
                    f = repo / "results" / "metrics" / m / key / f"seed-{s}.json"
                    _write(f, vals(OLD_KEYS))
                    first = first or f
                summary[f"{m}/{name}"] = vals(OLD_KEYS)
        _write(repo / "results" / "summary.json", summary)
    else:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["result", "model", "method", *NEW_KEYS])
        for m in params["models"]:
            for key, name in params["methods"].items():
                v = vals(NEW_KEYS)
                f = repo / "results" / "metrics" / m / f"{key}.json"
                _write(f, v)
                first = first or f
                w.writerow([f"{m}/{name}", m, name, *v.values()])
        _write(repo / "results" / "plots" / "headline.csv", buf.getvalue())
    assert first is not None
    return first


def _sh(repo: Path, *args: str) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "COLUMNS": "100000",
           "DVC_SITE_CACHE_DIR": str(repo / ".site-cache")}
    res = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"{' '.join(args)}: {res.stderr[-1500:]}")
    return res.stdout


def _width(text: str) -> int:
    return max((len(line) for line in text.splitlines()), default=0)


def measure(dvc_yaml: str, layout: str, params: dict, tmp: Path) -> dict:
    repo = tmp / layout
    repo.mkdir()
    _sh(repo, "git", "init", "-q")
    _sh(repo, DVC, "init", "-q")
    (repo / "dvc.yaml").write_text(dvc_yaml)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / "configs").mkdir()
    (repo / "configs" / "pipeline-leaderboard.yaml").write_text("name: pipeline\n")
    changed = _fabricate(repo, layout, params, random.Random(0))
    _sh(repo, "git", "add", "-A")
    _sh(repo, "git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "grid")
    first_key = next(iter(params["methods"]))
    params["methods"][first_key] = "llada_topp0.95_no_remask"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    metrics = json.loads(changed.read_text())
    metrics["validity_rate"] = 0.5
    changed.write_text(json.dumps(metrics))
    exp_csv = _sh(repo, DVC, "exp", "show", "--csv")
    header = next(csv.reader(io.StringIO(exp_csv)))
    shown = _sh(repo, DVC, "metrics", "show")
    out = {"exp show --csv columns": len(header),
           "exp show --only-changed columns": len(next(csv.reader(io.StringIO(
               _sh(repo, DVC, "exp", "show", "--csv", "--only-changed"))))),
           "metrics show lines": len(shown.splitlines()),
           "metrics show longest line": _width(shown),
           "metrics diff longest line": _width(_sh(repo, DVC, "metrics", "diff")),
           "params diff longest line": _width(_sh(repo, DVC, "params", "diff")),
           "dag width": _width(_sh(repo, DVC, "dag"))}
    if layout == "new":
        _sh(repo, DVC, "plots", "show", "-o", str(tmp / "plots"))
        html = (tmp / "plots" / "index.html").read_text()
        with open(repo / "results" / "plots" / "headline.csv", newline="") as f:
            results = [row["result"] for row in csv.DictReader(f)]
        out["plots show: HTML with every metric and result"] = all(
            k in html for k in NEW_KEYS) and all(f'"{r}"' in html for r in results)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=2, choices=(1, 2))
    ap.add_argument("--methods", type=int, default=22, choices=range(1, 23))
    ap.add_argument("--seeds", type=int, default=5, choices=range(1, 6))
    ap.add_argument("--baseline", default="c8220b9",
                    help="git revision whose dvc.yaml is the 'before' layout")
    args = ap.parse_args()
    methods = legacy_methods()[:args.methods]
    old_yaml = subprocess.run(["git", "-C", str(ROOT), "show", f"{args.baseline}:dvc.yaml"],
                              capture_output=True, text=True, check=True).stdout
    with tempfile.TemporaryDirectory(prefix="bdgen-dvc-views-") as d:
        rows = {"before": measure(old_yaml, "old",
                                  _params(args.models, methods, args.seeds), Path(d)),
                "after": measure((ROOT / "dvc.yaml").read_text(), "new",
                                 _params(args.models, methods, args.seeds), Path(d))}
    print(f"grid: {args.models} model(s) x {args.methods} method(s) x {args.seeds} seed(s); "
          f"before = dvc.yaml of {args.baseline}, after = this tree's")
    print(f"{'view':<48} {'before':>8} {'after':>8}")
    for key in rows["after"]:
        print(f"{key:<48} {rows['before'].get(key, '-')!s:>8} {rows['after'][key]!s:>8}")


if __name__ == "__main__":
    main()
