"""Benchmark of the full metric suite: one 5-seed method (5 x 1000 samples) against a
reference split of RPLAN size (synthetic dataset of 80,788 graphs -> 64,630 train graphs).

    .venv/bin/python bench/evaluate.py [--graphs 80788] [--seeds 5] [--samples 1000]

Reports cold (reference statistics built and cached) and warm (read from the cache) wall
time of ``evaluate_samples_files`` (dataset load from disk included), the time per metric
family, and peak memory (tracemalloc peak of the evaluation; process max RSS).
Aims (issue 4): warm < 5 s, cold < 15 s, peak < 500 MB. The original evaluator: ~16 s
per seed at 16,000 reference graphs, ~150 s per 5-seed method at RPLAN size.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bdgen.data.dataset import prepare_synthetic  # noqa: E402
from bdgen.data.graph import tokenize_many  # noqa: E402
from bdgen.data.samples_file import SamplesFile, save_samples  # noqa: E402
from bdgen.data.synthetic import generate_graphs  # noqa: E402
from bdgen.pipeline.evaluate import evaluate_samples_files  # noqa: E402

SEEDS = (42, 123, 456, 789, 1337)


def make_samples(ds, out: Path, seeds, n: int) -> list[Path]:
    """Synthetic 'model output': fresh plans with ~8 % of real edge slots re-drawn."""
    vocab = ds.vocab
    paths = []
    model = {"id": "bench-model", "sha256": "0" * 64, "version": "v1",
             "noise": {"type": "loglinear", "eps": 1e-3}, "dataset_hash": ds.dataset_hash,
             "dataset_id": ds.dataset_id, "n_max": vocab.n_max,
             "split": {"seed": 42, "fractions": [0.8, 0.1, 0.1]}}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        tokens, pads = tokenize_many(generate_graphs(n, seed=10_000 + seed), vocab)
        edges = tokens[:, vocab.n_max:]
        flip = (rng.random(edges.shape) < 0.08) & pads[:, vocab.n_max:]
        edges[flip] = rng.integers(0, 11, int(flip.sum()))
        rooms = pads[:, : vocab.n_max].sum(1)
        sf = SamplesFile(torch.from_numpy(tokens), torch.from_numpy(pads),
                         torch.from_numpy(rooms.astype(np.int64)), "llada_topp0.9_no_remask",
                         {"temperature": 0.0, "top_p": 0.9, "unmasking_mode": "llada",
                          "remasking_enabled": False, "remasking_strategy": None,
                          "remasking_eta": None, "remasking_t_switch": None},
                         model, seed, 100, n, {"wall_s": 0.0})
        path = out / f"seed-{seed}_n{n}_s100.pt"
        save_samples(sf, path)
        paths.append(path)
    return paths


def run(paths, dataset_path, cache_dir) -> tuple[float, float, dict]:
    tracemalloc.start()
    t0 = time.perf_counter()
    results = evaluate_samples_files(paths, dataset_path=dataset_path, cache_dir=cache_dir,
                                     denoising=False)
    wall = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return wall, peak / 2**20, results[0].timings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--graphs", type=int, default=80_788)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--samples", type=int, default=1000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        ds = prepare_synthetic(args.graphs, seed=0)
        ds_path = tmp / "data" / f"{ds.dataset_id}.pt"
        ds.save(ds_path)
        paths = make_samples(ds, tmp / "samples", SEEDS[: args.seeds], args.samples)
        print(f"setup (synthetic dataset of {len(ds)} graphs, "
              f"{len(ds.split('train'))} train; {args.seeds} x {args.samples} samples): "
              f"{time.perf_counter() - t0:.1f} s (not part of the figures)")
        del ds
        for label in ("cold", "warm", "warm"):
            wall, peak, timings = run(paths, ds_path, tmp / "cache")
            fam = ", ".join(f"{k} {v:.3f}" for k, v in timings.items()
                            if k not in ("total", "reference_cached", "reference_s"))
            print(f"{label}: {wall:.2f} s total | reference {timings['reference_s']:.2f} s "
                  f"(cached: {timings['reference_cached']}) | metrics "
                  f"{timings['total']:.2f} s for {args.seeds} seeds | tracemalloc peak "
                  f"{peak:.0f} MB")
            print(f"   per family (s, all seeds): {fam}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"process max RSS (incl. setup, torch import): {rss:.0f} MB")


if __name__ == "__main__":
    main()
