"""Build time of the default synthetic dataset, stage by stage.

Run: .venv/bin/python bench/data_prepare.py [--num-graphs N] [--seed S]
Aim (issue 2): the default size builds in well under a minute on a 2-core machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from bdgen.data.dataset import PreparedDataset, content_hash
from bdgen.data.graph import tokenize_many
from bdgen.data.synthetic import DEFAULT_NUM_GRAPHS, generate_graphs
from bdgen.data.vocab import RPLAN_VOCAB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-graphs", type=int, default=DEFAULT_NUM_GRAPHS)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    graphs = generate_graphs(args.num_graphs, args.seed)
    t1 = time.perf_counter()
    tokens, _ = tokenize_many(graphs, RPLAN_VOCAB)
    t2 = time.perf_counter()
    digest = content_hash(torch.from_numpy(tokens), RPLAN_VOCAB.n_max)
    t3 = time.perf_counter()
    ds = PreparedDataset.from_graphs(graphs, RPLAN_VOCAB, "synthetic", {})
    with tempfile.TemporaryDirectory() as tmp:
        t4 = time.perf_counter()
        ds.save(Path(tmp) / "ds.pt")
        t5 = time.perf_counter()
        PreparedDataset.load(Path(tmp) / "ds.pt")
        t6 = time.perf_counter()
    n = args.num_graphs
    print(f"graphs            {n}")
    print(f"generate          {t1 - t0:6.2f} s  ({n / (t1 - t0):,.0f} graphs/s)")
    print(f"tokenize          {t2 - t1:6.2f} s")
    print(f"hash              {t3 - t2:6.2f} s  ({digest[:12]})")
    print(f"save              {t5 - t4:6.2f} s")
    print(f"load + verify     {t6 - t5:6.2f} s")
    print(f"build total       {(t3 - t0) + (t5 - t4):6.2f} s  (generate + tokenize + hash + save)")


if __name__ == "__main__":
    main()
