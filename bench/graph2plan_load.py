"""Graph2Plan reader speed on a data.mat of RPLAN size, written in the real layout.

Run: .venv/bin/python bench/graph2plan_load.py [--records 80788]
The file is built from synthetic graphs (struct array ``data`` with rType/rEdge/gtBox),
then parsed cold, then loaded from the content-hash cache. Reference (spec §1.2): the
legacy loader parses in ~4 s and loads its cache in < 1 s.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.io

from bdgen.data.graph2plan import load_graph2plan
from bdgen.data.synthetic import generate_graphs


def write_mat(path: Path, num: int) -> None:
    graphs = generate_graphs(num, seed=0)
    data = np.zeros((num,), dtype=[("rType", "O"), ("rEdge", "O"), ("gtBox", "O")])
    for k, g in enumerate(graphs):
        data[k] = (np.array(g.node_types, dtype=np.uint8),
                   np.array(g.edge_triples, dtype=np.uint8).reshape(-1, 3),
                   np.zeros((g.num_rooms, 4), dtype=np.uint8))
    scipy.io.savemat(str(path), {"data": data})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=80_788)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        mat, cache = Path(tmp) / "data.mat", Path(tmp) / "cache"
        t0 = time.perf_counter()
        write_mat(mat, args.records)
        t1 = time.perf_counter()
        graphs, _, _ = load_graph2plan(mat, cache_dir=cache)
        t2 = time.perf_counter()
        again, _, _ = load_graph2plan(mat, cache_dir=cache)
        t3 = time.perf_counter()
        assert again == graphs
        print(f"records           {args.records}  ({mat.stat().st_size / 1e6:.1f} MB .mat)")
        print(f"write .mat        {t1 - t0:6.2f} s")
        print(f"parse + cache     {t2 - t1:6.2f} s")
        print(f"cached load       {t3 - t2:6.2f} s  (includes the file's sha256)")


if __name__ == "__main__":
    main()
