"""The ``_compiled`` methods against their eager twins, side by side in one process (issue
17.4: a confidence-remasking method, 1000 x 100, bf16, at or under 0.1 s on one H200).

    python bench/sample_compiled.py [--methods a,b] [--profile] [--sha-only NAME]

Needs a CUDA device. For each method (default: the aim's method and the fastest random
one, in bf16, plus the aim's method in fp32) it samples 1000 x 100 with the small random
model of ``bench/sample.py`` five times with the eager kernels and five times with each
variant of the compiled ones (:mod:`bdgen.diffusion.compiled_sampling`, ``VARIANTS``: as
``sample`` runs them, the whole-step graphs of :mod:`bdgen.diffusion.step_graphs` captured
anew at each call, PAD rows skipped or not, only the forward in a CUDA graph instead of
the whole step, SDPA's attention in place of the kernel of
:mod:`bdgen.model.short_attention`, weights compiled in as constants or not) and prints
the median wall time of calls 2-5 (the first, with compilation and graph capture, in
brackets), the ratio, the share of token positions equal to the eager twin's, whether the
five compiled calls gave identical tokens, and their sha256. ``--sha-only NAME`` prints
only the sha256 of one call of method NAME, so that other processes can check that its
tokens are the same in every process.
``--profile`` adds torch.profiler's top GPU kernels of one compiled call, ``--host-profile``
cProfile's top host functions of one.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _sampling import random_model, timed  # noqa: E402

from bdgen.diffusion.compiled_sampling import sample_batch_compiled  # noqa: E402
from bdgen.diffusion.fast_sampling import sample  # noqa: E402
from bdgen.diffusion.method import Method  # noqa: E402
from bdgen.diffusion.sampler import chunk_generator, draw_num_rooms  # noqa: E402

AIM = "llada_topp0.9_remdm_confidence_tsw1.0_bf16"
VARIANTS: tuple[tuple[str, dict[str, bool]], ...] = (
    ("compiled", {}), ("new graphs", {"reuse": False}), ("packed rows", {"pack_rows": True}),
    ("dense", {"pack_rows": False}), ("forward graph", {"whole_steps": False}),
    ("SDPA attention", {"short_attention": False}), ("weights frozen", {"freeze": True}),
    ("not frozen", {"freeze": False}), ("compiled again", {}))
"""(label, settings of :func:`sample_batch_compiled`): none = as :func:`sample` runs it
(whole-step graphs, kept from call to call); "new graphs": captured again at every call;
"forward graph": only the forward replayed from a CUDA graph, not the whole step; "weights
frozen"/"not frozen": inductor's freezing on/off (default: on in bf16)."""
METHODS = (AIM, "random_topp0.9_remdm_cap_eta0.4_bf16", "llada_topp0.9_remdm_confidence_tsw1.0")


def sha(tokens: torch.Tensor) -> str:
    return hashlib.sha256(tokens.cpu().numpy().tobytes()).hexdigest()[:16]


def calls(model, process, vocab, rooms, method: Method, dev, n: int = 5,
          settings: dict[str, bool] | None = None):
    """n timed calls: as :func:`sample` runs them, or (``settings`` given) the compiled
    loop with those settings, as :func:`sample` runs it on CUDA (one chunk, chunk 0's
    generator)."""
    if not settings:
        out = [timed(lambda: sample(model, process, vocab, rooms, method, 100, 42, dev).tokens,
                     dev) for _ in range(n)]
    else:
        out = [timed(lambda: sample_batch_compiled(
            model, process, vocab, rooms.to(dev), method, 100, chunk_generator(42, 0, dev),
            **settings)[0].cpu(), dev)
            for _ in range(n)]
    return [o for o, _ in out], [dt for _, dt in out]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--host-profile", action="store_true",
                    help="cProfile's top host functions of one compiled call")
    ap.add_argument("--sha-only", default=None, metavar="NAME")
    args = ap.parse_args()
    if os.environ.get("BENCH_DETERMINISTIC") == "1":
        torch.use_deterministic_algorithms(True)
    if not torch.cuda.is_available():
        sys.exit("bench/sample_compiled.py needs a CUDA device")
    dev = torch.device("cuda")
    model, process, vocab, dist = random_model("small", dev)
    rooms = draw_num_rooms(dist, 1000, 42)
    if args.sha_only:
        toks, _ = calls(model, process, vocab, rooms, Method.parse(args.sha_only), dev, 1)
        print(f"sha256 {args.sha_only} {sha(toks[0])}")
        return
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, 1000 samples x 100 "
          "steps, small random model; median of calls 2-5 (the first in brackets)")
    rows = []
    for name in args.methods.split(","):
        eager, comp = Method.parse(name), Method.parse(name + "_compiled")
        e_toks, e_dt = calls(model, process, vocab, rooms, eager, dev)
        e_ms = statistics.median(e_dt[1:]) * 1e3
        rows.append(f"{name:45s} eager          {e_ms:6.1f} ms ({e_dt[0] * 1e3:7.1f})")
        print(rows[-1], flush=True)
        for label, settings in VARIANTS:
            c_toks, c_dt = calls(model, process, vocab, rooms, comp, dev, settings=settings)
            same = all(torch.equal(c_toks[0], t) for t in c_toks[1:])
            agree = (c_toks[-1] == e_toks[-1]).float().mean().item()
            c_ms = statistics.median(c_dt[1:]) * 1e3
            rows.append(f"{'':45s} {label:14s} {c_ms:6.1f} ms ({c_dt[0] * 1e3:7.1f})"
                        f"  x{e_ms / c_ms:.2f}  agree {agree:.4f}  repeatable {same}"
                        f"  sha256 {sha(c_toks[-1])}")
            print(rows[-1], flush=True)
    if args.host_profile:
        import cProfile
        import pstats

        method = Method.parse(args.methods.split(",")[0] + "_compiled")
        with cProfile.Profile() as host:
            sample(model, process, vocab, rooms, method, 100, 42, dev)
            torch.cuda.synchronize()
        pstats.Stats(host).sort_stats("cumulative").print_stats(25)
    if args.profile:
        method = Method.parse(args.methods.split(",")[0] + "_compiled")
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            sample(model, process, vocab, rooms, method, 100, 42, dev)
        print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=25))
        events = [e for e in prof.key_averages() if e.self_device_time_total > 0]
        total = sum(e.self_device_time_total for e in events) / 1e3
        print(f"GPU kernel time of one compiled call: {total:.1f} ms, "
              f"{sum(e.count for e in events)} kernels and copies")


if __name__ == "__main__":
    main()
