"""How wide DVC's own views are at a given grid, for this dvc.yaml and baseline revisions'.

    .venv/bin/python bench/dvc_views.py                        # 2 models x 22 methods x 5 seeds
    .venv/bin/python bench/dvc_views.py --methods 3 --seeds 2  # the quick-start grid
    .venv/bin/python bench/dvc_views.py --baseline c8220b9     # only one baseline
    .venv/bin/python bench/dvc_views.py --baseline HEAD --show-table  # + the 200-wide tables

Default baselines: c8220b9 (before issue 18: metrics per (model, method, seed)) and f6dc8c1
(five headline metrics per result as DVC metrics, methods as a key -> name mapping).
Nothing is trained: for each layout, a scratch git + DVC repository gets the revision's
dvc.yaml, a params.yaml of the grid in the revision's params layout and the metrics / plot
files the pipeline's stages write (fabricated values, the real file layout and keys),
committed; then one method, ``generate.num_samples`` and one metric are changed in the
workspace. Printed per
layout: ``dvc exp show --csv`` column count (dependency-hash columns included, empty without
a dvc.lock), whether the ``dvc exp show --no-pager`` table at ``COLUMNS=200`` shows every
metric column and every column (DVC collapses the columns that do not fit, right to left,
into ``…`` columns) and the narrowest ``COLUMNS`` that shows every metric column (the table
has the workspace, the baseline and one named experiment saved with ``dvc exp save``, so
dependency hashes are filled in), ``dvc metrics show`` lines and longest line, ``dvc
metrics diff`` / ``dvc params diff`` longest line, ``dvc dag`` width, and whether ``dvc plots
show`` wrote HTML with the data.
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
from dvc_overhead import in_layout_of

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


def layout_of(dvc_yaml: str) -> str:
    """old: metrics per (model, method, seed) and a summary of every result; per-result: five
    headline metrics per result; summary: one results/summary.json of the top result."""
    if "seed-${item.seed}" in dvc_yaml:
        return "old"
    return "summary" if "results/summary.json" in dvc_yaml else "per-result"


def _fabricate(repo: Path, layout: str, params: dict, rng: random.Random) -> Path:
    """The metrics (and plot) files of ``layout``; returns the metrics file to change."""
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
        if layout == "summary":
            first = repo / "results" / "summary.json"
            # the widest `top` the grid can have (the table's width depends on it)
            top = max((f"{m}/{'v2_' if m == 'v2' else ''}{name}" for m in params["models"]
                       for name in params["methods"].values()), key=len)
            first.write_text(json.dumps(  # in the stage's key order, which DVC keeps
                {"top": top, **vals(NEW_KEYS),
                 "results": len(params["models"]) * len(params["methods"])}, indent=2))
    assert first is not None
    return first


def _sh(repo: Path, *args: str, columns: int = 100000) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "COLUMNS": str(columns),
           "DVC_SITE_CACHE_DIR": str(repo / ".site-cache")}
    res = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"{' '.join(args)}: {res.stderr[-1500:]}")
    return res.stdout


WIDEST = 4000
_OUTS = ("from dvc.repo import Repo\n"
         "print(*(o.def_path for s in Repo('.').index.stages for o in s.outs))")


def _metric_count(repo: Path) -> int:
    """How many metric columns ``dvc exp show`` has (they come first, after the fixed ones)."""
    def leaves(node: object) -> int:
        return sum(map(leaves, node.values())) if isinstance(node, dict) else 1
    workspace = json.loads(_sh(repo, DVC, "exp", "show", "--json"))[0]["data"]
    return sum(leaves(f.get("data", {})) for f in workspace["metrics"].values())


def _width(text: str) -> int:
    return max((len(line) for line in text.splitlines()), default=0)


def measure(rev: str | None, params: dict, tmp: Path, show_table: bool = False) -> dict:
    """The views of revision ``rev``'s layout (None: this tree's)."""
    def text(path: str) -> str:
        if rev is None:
            return (ROOT / path).read_text()
        return subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{path}"],
                              capture_output=True, text=True, check=True).stdout
    dvc_yaml = text("dvc.yaml")
    layout = layout_of(dvc_yaml)
    repo = tmp / (rev or "tree")
    repo.mkdir()
    _sh(repo, "git", "init", "-q")
    _sh(repo, DVC, "init", "-q")
    (repo / "dvc.yaml").write_text(dvc_yaml)
    theirs = yaml.safe_load(text("params.yaml"))
    (repo / "params.yaml").write_text(yaml.safe_dump(in_layout_of(params, theirs),
                                                     sort_keys=False))
    (repo / "configs").mkdir()
    (repo / "configs" / "pipeline-leaderboard.yaml").write_text("name: pipeline\n")
    changed = _fabricate(repo, layout, params, random.Random(0))
    _sh(repo, "git", "add", "-A")
    _sh(repo, "git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "grid")
    first_key = next(iter(params["methods"]))
    params = {**params, "methods": {**params["methods"],
                                    first_key: "llada_topp0.95_no_remask"},
              "generate": {**params["generate"], "num_samples": 2000}}
    (repo / "params.yaml").write_text(yaml.safe_dump(in_layout_of(params, theirs),
                                                     sort_keys=False))
    metrics = json.loads(changed.read_text())
    metrics["validity_rate"] = 0.5
    changed.write_text(json.dumps(metrics))
    shown = _sh(repo, DVC, "metrics", "show")
    out: dict = {"layout": layout,
                 "metrics show lines": len(shown.splitlines()),
                 "metrics show longest line": _width(shown),
                 "metrics diff longest line": _width(_sh(repo, DVC, "metrics", "diff")),
                 "params diff longest line": _width(_sh(repo, DVC, "params", "diff")),
                 "dag width": _width(_sh(repo, DVC, "dag"))}
    # ... then saved as an experiment, so that the exp show table has a named experiment
    # row and dependency hashes, as after `dvc exp run`; every output the stages would have
    # written has to exist for that
    for path in _sh(repo, sys.executable, "-c", _OUTS).split():
        if not (repo / path).exists():
            _write(repo / path, "{}")
    _sh(repo, DVC, "exp", "save", "-n", "more-samples")
    header = next(csv.reader(io.StringIO(_sh(repo, DVC, "exp", "show", "--csv"))))
    metric_cols = header[5:5 + _metric_count(repo)]  # after Experiment, rev, typ, ...

    def table(width: int) -> str:
        return _sh(repo, DVC, "exp", "show", "--no-pager", columns=width)

    def every_metric(width: int) -> bool:  # in the header row(s), not collapsed into "…"
        return set(metric_cols) <= set(" ".join(table(width).splitlines()[:4]).split())

    if show_table:  # the 200-wide table itself, to look at
        print(f"{rev or 'this tree'}: dvc exp show --no-pager at COLUMNS=200\n{table(200)}")
    narrowest: int | str = f">{WIDEST}"
    if every_metric(WIDEST):
        lo, hi = 40, WIDEST  # every_metric(hi) holds
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if every_metric(mid) else (mid, hi)
        narrowest = hi
    out = {"layout": out.pop("layout"), "exp show --csv columns": len(header),
           "exp show table (200 wide): every metric": every_metric(200),
           "exp show table (200 wide): every column": "…" not in table(200),
           "exp show table: narrowest width with every metric": narrowest,
           "exp show --only-changed columns": len(next(csv.reader(io.StringIO(
               _sh(repo, DVC, "exp", "show", "--csv", "--only-changed"))))),
           **out}
    if layout != "old":
        _sh(repo, DVC, "plots", "show", "-o", str(repo.with_name(repo.name + "-plots")))
        html = (repo.with_name(repo.name + "-plots") / "index.html").read_text()
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
    ap.add_argument("--show-table", action="store_true",
                    help="print each layout's dvc exp show table at COLUMNS=200")
    ap.add_argument("--baseline", action="append", default=None,
                    help="git revision whose dvc.yaml + params layout is a 'before' column "
                         "(repeatable; default: c8220b9 and f6dc8c1)")
    args = ap.parse_args()
    methods = legacy_methods()[:args.methods]
    revs: list[str | None] = [*(args.baseline or ["c8220b9", "f6dc8c1"]), None]
    with tempfile.TemporaryDirectory(prefix="bdgen-dvc-views-") as d:
        rows = {rev: measure(rev, _params(args.models, methods, args.seeds), Path(d),
                             args.show_table)
                for rev in revs}
    print(f"grid: {args.models} model(s) x {args.methods} method(s) x {args.seeds} seed(s); "
          "columns: the dvc.yaml + params layout of each revision, then this tree's")
    names = [rev or "tree" for rev in revs]
    print(f"{'view':<48}" + "".join(f" {n:>10}" for n in names))
    for key in rows[None]:
        print(f"{key:<48}" + "".join(f" {rows[r].get(key, '-')!s:>10}" for r in revs))


if __name__ == "__main__":
    main()
