"""Guided (SVDD) sampling speed next to unguided sampling of the same base methods, in one run.

    python bench/guided.py [--device cpu|cuda] [--num-samples 1000] [--steps 100]
                           [--ks 4,16,64] [--model CKPT] [--preset small]

For the two bases ``llada_topp0.9_no_remask`` and ``llada_topp0.9_remdm_confidence_tsw1.0``
it times, on the same rooms and seed: the unguided method, then the guided method with soft
reward (``_guided_K{K}_a0.01_soft_linear``, the legacy best setting) for every K of
``--ks``, and prints seconds, samples/s, model calls and the ratio guided / unguided.
The aim on one H200 (issue 16): K = 16 guided confidence at most 3x the unguided time.

The constraint set is the legacy CS2 (one kitchen, kitchen next to living room, no bathroom
next to the kitchen, 2-3 bathrooms); the model is the small preset, randomly initialised and
perturbed (timing does not depend on training), or a checkpoint with ``--model``. Samplers
run with their defaults (CPU: chunks of 128 on concurrent threads, compaction, early stop;
CUDA: everything in one batch, CUDA-graph forwards). Each measurement is preceded by a short
warm-up. The guided sampler's default proposal shares the softmax and nucleus sort of a
sample among its K candidates (:mod:`bdgen.diffusion.guided_fast`); ``--reference`` also
times the reference proposal (logits tiled K times) and checks that both give the same
tokens on this device.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _sampling import add_common_args, device_of, random_model, run_line, timed  # noqa: E402

from bdgen.diffusion.fast_sampling import sample  # noqa: E402
from bdgen.diffusion.guided import sample_guided  # noqa: E402
from bdgen.diffusion.method import Method  # noqa: E402
from bdgen.diffusion.sampler import draw_num_rooms  # noqa: E402
from bdgen.guidance.schema import compile_specs  # noqa: E402

BASES = ("llada_topp0.9_no_remask", "llada_topp0.9_remdm_confidence_tsw1.0")
CS2 = [
    {"type": "ExactCount", "name": "one_kitchen", "room_type": "Kitchen", "target": 1},
    {"type": "RequireAdj", "name": "kitchen_near_living", "type_a": "Kitchen",
     "type_b": "LivingRoom"},
    {"type": "ForbidAdj", "name": "no_bath_kitchen", "type_a": "Bathroom",
     "type_b": "Kitchen"},
    {"type": "CountRange", "name": "between_2_and_3_bathrooms", "room_type": "Bathroom",
     "lo": 2, "hi": 3},
]


def load(args, device):
    if args.model:
        from bdgen.diffusion.process import forward_process_of
        from bdgen.model.checkpoint import build_denoiser, load_checkpoint

        ckpt = load_checkpoint(args.model)
        return (build_denoiser(ckpt, device), forward_process_of(ckpt, device), ckpt.vocab,
                ckpt.num_rooms_distribution, ckpt.version == "v2")
    torch.manual_seed(0)  # the initialisation draws from the global generator
    return (*random_model(args.preset, device), False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(ap)
    ap.add_argument("--ks", default="4,16,64", help="candidate counts K")
    ap.add_argument("--alpha", default="0.01")
    ap.add_argument("--bases", default=",".join(BASES))
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--reference", action="store_true",
                    help="also time the reference proposal (logits tiled K times) and check "
                         "that it gives the same tokens as the default shared proposal")
    args = ap.parse_args(argv)
    device = device_of(args)
    model, process, vocab, dist, v2 = load(args, device)
    cs = compile_specs(CS2)
    rooms = draw_num_rooms(dist, args.num_samples, args.seed)
    ks = [int(k) for k in args.ks.split(",")]
    prefix = "v2_" if v2 else ""
    print(f"{run_line(args, device)}, soft reward, alpha {args.alpha}, CS2 ({len(cs)} "
          "constraints)")
    header = (f"{'method':72s} {'K':>3s} {'s':>8s} {'samples/s':>10s} {'calls':>6s} "
              f"{'x unguided':>10s}")
    print(header)
    print("-" * len(header))
    warm_rooms = rooms  # same shapes as the timed run (CUDA graphs are captured per shape)
    for base in args.bases.split(","):
        unguided = Method.parse(prefix + base)
        sample(model, process, vocab, warm_rooms, unguided, 2, 0, device,
               batch_size=args.batch_size)
        out, t0 = timed(lambda: sample(model, process, vocab, rooms, unguided,  # noqa: B023
                                       args.steps, args.seed, device,
                                       batch_size=args.batch_size), device)
        print(f"{unguided.format():72s} {'-':>3s} {t0:8.2f} {args.num_samples / t0:10.1f} "
              f"{out.model_calls:6d} {1.0:10.2f}", flush=True)
        for k in ks:
            m = Method.parse(f"{prefix}{base}_guided_K{k}_a{args.alpha}_soft_linear")
            sample_guided(model, process, vocab, warm_rooms, m, cs, 2, 0, device,
                          batch_size=args.batch_size)
            out, t = timed(lambda: sample_guided(model, process, vocab, rooms, m,  # noqa: B023
                                                 cs, args.steps, args.seed, device,
                                                 batch_size=args.batch_size), device)
            sat = out.diagnostics["reward_selected"][-1]
            line = (f"{m.format():72s} {k:3d} {t:8.2f} {args.num_samples / t:10.1f} "
                    f"{out.model_calls:6d} {t / t0:10.2f}   (final mean reward {sat:.3f})")
            if args.reference:
                ref, tr = timed(lambda: sample_guided(  # noqa: B023
                    model, process, vocab, rooms, m, cs, args.steps, args.seed, device,  # noqa: B023
                    batch_size=args.batch_size, shared_proposal=False), device)
                line += (f" reference proposal {tr:.2f} s ({tr / t0:.2f}x), same tokens: "
                         f"{torch.equal(ref.tokens, out.tokens)}")
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
