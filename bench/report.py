"""Wall time of the whole ``bdgen report`` command, this tree against a baseline commit.

    .venv/bin/python bench/report.py --legacy DIR          # a legacy results folder (22 files)
    .venv/bin/python bench/report.py                       # synthetic: 22 methods x 5 seeds
    .venv/bin/python bench/report.py --baseline REV --repeat 5 --expect v2_remasking

The store (SQLite, in a temp dir) holds either the imported legacy folder or 22 synthetic
methods x 5 seeds with every legacy per-seed metric, the stratified validity per room count
and model-level denoising metrics. The baseline is ``git archive REV bdgen`` unpacked in the
temp dir (default: the last commit whose HTML report drew matplotlib PNGs). Each tree gets
its own store, built from the same input by that tree's own code (a subprocess with its
package first on the path): a store is at the schema revision of the code that made it,
and a tree refuses a store at a revision it does not know (the baseline's schema head is
0002, this tree's newer), so one shared store cannot serve both. The synthetic values are
the same in both (same seed, same metric names); the legacy folder is imported by each
tree's importer (``Store.import_result_files``, or ``legacy_import.import_paths`` before
it), so the two ``comparison.md`` files also check that both read the folder alike. Each round runs
the baseline and this tree once, alternately, as subprocesses (Python start-up and imports
included), each into its own output folder; the figures are medians over the rounds, wall
time and CPU time (user + sys of the child), plus the load average before and after (the
machine is shared: compare the two figures of one run, not runs of different days). The two
``comparison.md`` files must agree apart from their time stamp. A second figure per tree is
``render_html`` alone, in process (its imports and template compile included). Aim: < 3 s
for the whole command.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: The last commit of main whose report drew its plots with matplotlib.
MATPLOTLIB_REPORT = "301fc0b4246c596cc26bc7eda97311b06e2fbadf"
SEEDS = (42, 123, 456, 789, 1337)


def synthetic_store(db: str, n_methods: int = 22) -> None:
    """22 methods x 5 seeds of one model, random but plausible values (with the bdgen first
    on ``sys.path``: :func:`build_store` runs it under each tree's)."""
    from bdgen.diffusion.method import Method
    from bdgen.eval.registry import DENOISING_T_GRID, LEGACY_PER_SEED_ORDER
    from bdgen.store.api import Store

    rng = random.Random(0)
    names = [Method(u, top_p=tp, **r).format()
             for u in ("llada", "random") for tp in (None, 0.9)
             for r in ({}, {"remasking": "cap", "eta": 0.2}, {"remasking": "cap", "eta": 0.6},
                       {"remasking": "confidence", "t_switch": 0.5},
                       {"remasking": "confidence"}, {"remasking": "cap", "eta": 1.0})]
    store = Store.open(db)
    try:
        model = "bench-v1-loglinear"
        store.get_or_create_model(model, "v1", "loglinear")
        store.record_denoising(model, {f"denoise_{q}_t{t:.1f}": rng.random()
                                       for q in ("acc_node", "acc_edge", "ce_node", "ce_edge")
                                       for t in DENOISING_T_GRID})
        items = []
        for method in names[:n_methods]:
            for seed in SEEDS:
                gid = store.start_generation_run(model, method, seed, 1000, 100)
                store.finish_generation_run(gid, "0" * 64, f"/s/{method}/{seed}.pt")
                metrics = {k: rng.random() for k in LEGACY_PER_SEED_ORDER}
                metrics["validity_by_num_rooms"] = {str(n): {"overall": rng.random()}
                                                    for n in range(4, 9)}
                items.append((gid, metrics))
        store.record_evaluations(items)
    finally:
        store.close()


def legacy_store(db: str, folder: str) -> None:
    from bdgen.store.api import Store

    store = Store.open(db)
    try:
        if hasattr(store, "import_result_files"):
            reports = store.import_result_files([folder])
        else:  # a baseline from before the importer moved onto the Store
            from bdgen.store.legacy_import import import_paths
            reports = import_paths(store, [folder])
    finally:
        store.close()
    failed = [r for r in reports if getattr(r, "status", "") == "failed"]
    if failed:
        sys.exit(f"{len(failed)} legacy file(s) failed to import: {failed[:3]}")


_BUILD = """
import sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]  # the tree's bdgen, then this file's folder
from report import legacy_store, synthetic_store
legacy_store(sys.argv[3], sys.argv[4]) if len(sys.argv) > 4 else synthetic_store(sys.argv[3])
"""


def build_store(tree: Path, db: str, legacy: str | None) -> None:
    """The store at ``db`` built by ``tree``'s own bdgen (a subprocess; cwd=tree so that
    no other bdgen is found first)."""
    subprocess.run([sys.executable, "-c", _BUILD, str(tree), str(Path(__file__).parent), db,
                    *([legacy] if legacy else [])], cwd=tree, check=True,
                   env=dict(os.environ, PYTHONPATH=str(tree)))


def timed(tree: Path, args: list[str]) -> tuple[float, float]:
    """(wall, user + sys CPU) seconds of ``bdgen <args>`` with ``tree``'s bdgen package."""
    env = dict(os.environ, PYTHONPATH=str(tree))  # and cwd=tree: "-c" puts the cwd first
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "from bdgen.cli.main import cli; cli()", *args],
                   env=env, cwd=tree, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


# In-process: the HTML renderer alone (first call: its imports and template compile included).
_HTML_ONLY = """
import sys, time
try:
    from bdgen.pipeline.views import load_results
except ImportError:  # a baseline from before the views moved out of the CLI
    from bdgen.cli.leaderboard import load_results
from bdgen.report.comparison_md import build_comparison
from bdgen.report.document import extra_sections, ordered
from bdgen.report.profiles import load_profile
results = ordered(load_results(sys.argv[1]))
doc = build_comparison(results)
extras = extra_sections(results, load_profile("preferred"), None)  # same in both trees
t0 = time.perf_counter()
from bdgen.report.html import render_html
render_html(doc, results, extras)
print(time.perf_counter() - t0)
"""


def html_only(tree: Path, db: str) -> float:
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run([sys.executable, "-c", _HTML_ONLY, db], env=env, cwd=tree,
                         check=True, capture_output=True, text=True).stdout
    return float(out.split()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--legacy", help="a legacy results folder to import (else synthetic)")
    ap.add_argument("--baseline", default=MATPLOTLIB_REPORT, help="git revision to compare")
    ap.add_argument("--repeat", type=int, default=3, help="rounds (each runs both once)")
    ap.add_argument("--expect", help="pass --expect NAME to both (adds the verdict section)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        base = Path(tmp) / "baseline"
        base.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline, "bdgen"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
        trees = {"baseline": base, "this tree": ROOT}
        dbs = {name: str(Path(tmp) / f"{name.replace(' ', '_')}.db") for name in trees}
        for name, tree in trees.items():  # each tree's store, by its own code
            build_store(tree, dbs[name], args.legacy)
        what = (f"legacy folder {args.legacy}" if args.legacy
                else "synthetic, 22 methods x 5 seeds")
        extra = ["--expect", args.expect] if args.expect else []
        runs: dict[str, list[tuple[float, float]]] = {"baseline": [], "this tree": []}
        renders: dict[str, list[float]] = {"baseline": [], "this tree": []}
        load0 = os.getloadavg()
        for k in range(args.repeat):
            for name, tree in trees.items():
                out = Path(tmp) / f"{name.replace(' ', '_')}_{k}"
                runs[name].append(timed(tree, ["report", "--db", dbs[name], "--out", str(out),
                                               *extra]))
                renders[name].append(html_only(tree, dbs[name]))
        load1 = os.getloadavg()
        mds = [[ln for ln in (Path(tmp) / f"{n}_0" / "comparison.md").read_text().splitlines()
                if not ln.startswith("**Generated**")] for n in ("baseline", "this_tree")]
        print(f"store: {what} (one per tree, built by its code); baseline "
              f"{args.baseline[:12]}; {args.repeat} rounds; "
              f"{os.cpu_count()} CPUs")
        print("load average before: {:.2f} {:.2f} {:.2f}; after: {:.2f} {:.2f} {:.2f}".format(
            *load0, *load1))
        print(f"{'':12} {'wall median':>12} {'(min - max)':>16} {'CPU median':>11}  "
              f"{'html bytes':>10}  {'render_html alone':>17}")
        med = {}
        for name, vals in runs.items():
            walls, cpus = [w for w, _ in vals], [c for _, c in vals]
            med[name] = statistics.median(walls)
            size = (Path(tmp) / f"{name.replace(' ', '_')}_0" / "comparison.html").stat().st_size
            print(f"{name:12} {med[name]:11.2f}s {min(walls):7.2f} - {max(walls):5.2f}s "
                  f"{statistics.median(cpus):10.2f}s  {size:10,d}  "
                  f"{statistics.median(renders[name]):16.2f}s")
        print(f"speed-up (baseline / this tree, wall medians): "
              f"{med['baseline'] / med['this tree']:.1f}x")
        print("comparison.md identical apart from the time stamp:", mds[0] == mds[1])
        if mds[0] != mds[1]:  # e.g. wording changed since the baseline: say where
            import difflib
            for line in list(difflib.unified_diff(mds[0], mds[1], "baseline", "this tree",
                                                  n=0, lineterm=""))[:12]:
                print("  " + line[:160])


if __name__ == "__main__":
    main()
