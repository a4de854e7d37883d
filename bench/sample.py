"""Sampling throughput: the optimised sampler vs a legacy-style run of the same code.

    python bench/sample.py [--device cpu|cuda] [--num-samples 1000] [--steps 100]
                           [--model CKPT] [--methods a,b] [--profile] [--compile]
                           [--compile-graphs] [--precision fp32|bf16|tf32] [--seed-batch K]

For each method it samples ``num_samples x steps`` twice with the small model (randomly
initialised and perturbed so that logits are not all zero, or a checkpoint via --model):

* optimised: chunks of 128 on CPU (all samples at once on CUDA), sampled concurrently
  one per core (``--workers``), early stop, row compaction, model micro-batches of 128
  rows and each room count's real positions as one dense batch (CPU defaults); the
  forward replayed from a CUDA graph (CUDA default, off with ``--no-cuda-graphs``);
* legacy-style: the reference modules (:mod:`bdgen.diffusion.sampler`'s loop and the
  reference denoiser forward): batch 64, no early stop, no compaction, dense rows (no
  PAD-row packing), per-row time embeddings, no CUDA graph, float32 (a ``_bf16`` method is
  timed against its float32 twin): what the original code did, always with the eager model
  (``--compile`` only applies to the optimised setting; the compiled model is float32 too
  but fuses ops, so its tokens may differ in rare ties).

``--precision bf16`` appends ``_bf16`` to every method (the denoiser in bfloat16 mixed
precision, :mod:`bdgen.model.precision`).

and prints samples/s, model calls, rows evaluated, the ratio, and whether both produced
the same tokens where they must (early stop, compaction and CUDA graphs never change
tokens; the batch size does, because random draws are batch-shaped, so ``--check`` runs the
reference loop, with the optimised model, at the optimised batch size). ``--profile``
prints the top operators of one optimised run (torch.profiler) to show what bounds the rest.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _sampling import add_common_args, device_of, random_model, run_line, timed  # noqa: E402

from bdgen.diffusion.fast_sampling import sample  # noqa: E402
from bdgen.diffusion.method import Method  # noqa: E402
from bdgen.diffusion.process import ScheduleProcess  # noqa: E402
from bdgen.diffusion.sampler import CPU_BATCH, draw_num_rooms  # noqa: E402
from bdgen.diffusion.sampler import sample as reference_sample  # noqa: E402
from bdgen.diffusion.schedules import make_schedule  # noqa: E402

METHODS = ("llada_topp0.9_no_remask", "llada_topp0.9_remdm_confidence_tsw1.0",
           "random_topp0.9_no_remask", "random_topp0.9_remdm_cap_eta0.4")


def load(args, device):
    if args.model:
        from bdgen.model.checkpoint import build_denoiser, load_checkpoint

        ckpt = load_checkpoint(args.model)
        model = build_denoiser(ckpt, device)
        process = ScheduleProcess(make_schedule(ckpt.noise)).to(device)
        return model, process, ckpt.vocab, ckpt.num_rooms_distribution
    return random_model(args.preset, device)


def seed_batch_figures(args, model, process, vocab, dist, device, graphs) -> None:
    """K seeds of each method: K separate calls vs one batch, and whether every seed's
    tokens are identical (they must be on CPU; on CUDA kernels may depend on the batch)."""
    from bdgen.diffusion.seed_batch import sample_seeds

    seeds = [args.seed + k for k in range(args.seed_batch)]
    rooms = {s: draw_num_rooms(dist, args.num_samples, s) for s in seeds}
    print(f"\nseed batches: {len(seeds)} seeds x {args.num_samples} samples x {args.steps} "
          "steps")
    for name in args.methods.split(","):
        m = dataclasses.replace(Method.parse(name), precision=args.precision)
        sample_seeds(model, process, vocab, {s: r[:8] for s, r in rooms.items()}, m, 2,
                     device, cuda_graphs=graphs)  # warm-up
        alone, t_alone = {}, 0.0
        for s in seeds:
            out, dt = timed(lambda s=s, m=m: sample(model, process, vocab, rooms[s], m, args.steps,
                                               s, device, batch_size=args.batch_size,
                                               cuda_graphs=graphs), device)
            alone[s], t_alone = out, t_alone + dt
        together, t_tog = timed(lambda m=m: sample_seeds(
            model, process, vocab, rooms, m, args.steps, device, batch_size=args.batch_size,
            cuda_graphs=graphs), device)
        same = all(torch.equal(alone[s].tokens, together[s].tokens) for s in seeds)
        print(f"{m.format():47s} separate {t_alone:7.3f} s | one batch {t_tog:7.3f} s | "
              f"{t_alone / t_tog:5.2f}x  identical-per-seed={same}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(ap)
    ap.add_argument("--batch-size", type=int, default=None, help="optimised batch [all]")
    ap.add_argument("--legacy-batch", type=int, default=64)
    ap.add_argument("--model-batch", type=int, default=None,
                    help="rows per forward in the optimised setting [CPU 128, CUDA all]")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--skip-legacy", action="store_true")
    ap.add_argument("--check", action="store_true",
                    help="also run the full loop at the optimised batch size and compare tokens")
    ap.add_argument("--compile", action="store_true", help="torch.compile the denoiser")
    ap.add_argument("--compile-mode", default="default",
                    help="torch.compile mode, e.g. reduce-overhead (CUDA graphs in the model)")
    ap.add_argument("--profile", action="store_true", help="profile one optimised run")
    ap.add_argument("--rounds", type=int, default=0,
                    help="timing rounds over slices of the samples, alternating the two "
                         "settings [CPU: one per 128-sample chunk; CUDA: 1]")
    ap.add_argument("--workers", type=int, default=None,
                    help="CPU chunks sampled concurrently in the optimised setting [torch's "
                         "thread count]; the legacy-style setting always uses 1")
    ap.add_argument("--dense", action="store_true",
                    help="optimised setting without PAD-row packing (FastDenoiser."
                         "pack_real_positions = False)")
    ap.add_argument("--no-cuda-graphs", action="store_true",
                    help="optimised setting on CUDA without the CUDA-graph forward")
    ap.add_argument("--precision", choices=["fp32", "bf16", "tf32"], default="fp32",
                    help="run the optimised setting in this precision (method suffix _bf16 "
                         "/ _tf32)")
    ap.add_argument("--compile-graphs", action="store_true",
                    help="with --compile: keep the sampler's CUDA graph of the compiled "
                         "forward (fused kernels, one launch per step)")
    ap.add_argument("--seed-batch", type=int, default=0, metavar="K",
                    help="also time K seeds sampled as K calls vs one batch "
                         "(bdgen.diffusion.seed_batch) and compare each seed's tokens")
    args = ap.parse_args()
    device = device_of(args)
    model, process, vocab, dist = load(args, device)
    # The legacy-style setting always runs the eager model with the original's dense rows.
    legacy_model = copy.deepcopy(model)
    legacy_model.use_reference_modules()
    if args.dense:
        model.pack_real_positions = False
    if args.compile:
        model = torch.compile(model, mode=args.compile_mode)
    rooms = draw_num_rooms(dist, args.num_samples, args.seed)
    graphs = device.type == "cuda" and not (args.no_cuda_graphs or (
        args.compile and not args.compile_graphs))
    print(run_line(args, device))
    # warm-up at both batch sizes (kernels, allocator, torch.compile)
    warm = Method.parse(METHODS[0])
    for mdl, bs, prec in ((model, args.batch_size, args.precision),
                          (legacy_model, args.legacy_batch, "fp32")):
        sample(mdl, process, vocab, rooms, dataclasses.replace(warm, precision=prec), 2, 0,
               device, batch_size=bs, compact=False, cuda_graphs=False)
    # CPU: one round per group of concurrently sampled chunks, alternating optimised and
    # legacy-style, so that a change in the shared machine's speed hits both settings
    # alike; CUDA: one round.
    per_round = (args.batch_size or CPU_BATCH) * (args.workers or torch.get_num_threads())
    rounds = args.rounds or (1 if device.type == "cuda" else -(-args.num_samples // per_round))
    parts = rooms.tensor_split(rounds)
    print(f"{rounds} timing round(s), optimised then legacy-style in each")
    header = (f"{'method':47s} {'opt s/s':>8s} {'calls':>5s} {'rows':>7s} | {'legacy s/s':>10s} "
              f"{'calls':>5s} {'rows':>7s} | {'ratio':>5s}")
    print(header)
    print("-" * len(header))
    for name in args.methods.split(","):
        m = dataclasses.replace(Method.parse(name), precision=args.precision) \
            if args.precision != "fp32" else Method.parse(name)
        name = m.format()
        legacy_m = dataclasses.replace(m, precision="fp32")
        t_opt = t_leg = 0.0
        opt_calls = opt_rows = leg_calls = leg_rows = 0
        tokens, full_tokens = [], []
        for part in parts:  # alternate the two settings so both see the same CPU load
            # Each lambda is called at once, inside this iteration.
            opt, dt = timed(lambda: sample(model, process, vocab, part, m, args.steps,  # noqa: B023
                                           args.seed, device, batch_size=args.batch_size,
                                           model_batch=args.model_batch,
                                           workers=args.workers, cuda_graphs=graphs),
                            device)
            t_opt, opt_calls, opt_rows = (t_opt + dt, opt_calls + opt.model_calls,
                                          opt_rows + opt.rows_evaluated)
            tokens.append(opt.tokens)
            if not args.skip_legacy:
                leg, dt = timed(lambda: reference_sample(  # noqa: B023
                    legacy_model, process, vocab, part, legacy_m, args.steps,  # noqa: B023
                    args.seed, device, batch_size=args.legacy_batch), device)
                t_leg, leg_calls, leg_rows = (t_leg + dt, leg_calls + leg.model_calls,
                                              leg_rows + leg.rows_evaluated)
            if args.check:
                full_tokens.append(reference_sample(model, process, vocab, part, m,
                                                    args.steps, args.seed, device,
                                                    batch_size=args.batch_size).tokens)
        line = f"{name:47s} {args.num_samples / t_opt:8.1f} {opt_calls:5d} {opt_rows:7d} |"
        if not args.skip_legacy:
            line += (f" {args.num_samples / t_leg:10.1f} {leg_calls:5d} {leg_rows:7d} | "
                     f"{t_leg / t_opt:5.2f}x")
        if args.check:
            same = torch.equal(torch.cat(full_tokens), torch.cat(tokens))
            line += f"  identical-to-full-loop={same}"
        print(line, flush=True)
    if args.seed_batch:
        seed_batch_figures(args, model, process, vocab, dist, device, graphs)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda"
                                         else [])
        m = Method.parse(args.methods.split(",")[0])
        if args.precision != "fp32":  # the method as timed above, with its precision
            m = dataclasses.replace(m, precision=args.precision)
        with profile(activities=acts) as prof:
            sample(model, process, vocab, rooms, m, args.steps, args.seed, device,
                   batch_size=args.batch_size, cuda_graphs=graphs)
        key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=15))


if __name__ == "__main__":
    main()
