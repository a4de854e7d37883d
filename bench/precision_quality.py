"""Does bfloat16 mixed precision cost quality? Training and sampling, fp32 vs bf16.

    python bench/precision_quality.py --device cuda                  # small, 3000 steps
    .venv/bin/python bench/precision_quality.py --steps 300 --model tiny --samples 200

1. Trains the same model (same init, data order, seed) twice, ``--precision fp32`` and
   ``bf16``, and prints the validation ELBO and accuracies (validation always runs in
   float32) every quarter of the run.
2. Samples the float32-trained model with each ``--methods`` entry in fp32 and in bf16
   (same seeds, so the same room counts) and prints the main metrics of the evaluator
   against the train split, mean over ``--seeds``.

bf16 autocast is the same number format on CPU and GPU (bf16 products, float32
accumulation), so the quality comparison transfers between them; the speed does not (see
docs/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

METHODS = ("llada_topp0.9_no_remask", "llada_topp0.9_remdm_confidence_tsw1.0",
           "random_topp0.9_no_remask", "random_topp0.9_remdm_cap_eta0.4")
SHOWN = ("eval/validity_rate", "eval/inside_validity", "eval/diversity", "eval/novelty",
         "eval/mode_coverage_weighted", "eval/num_sample_modes", "eval/edge_js",
         "eval/node_js", "eval/mmd_degree")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--model", default="small")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--num-graphs", type=int, default=25_000)
    ap.add_argument("--val-graphs", type=int, default=2048)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--sample-steps", type=int, default=100)
    ap.add_argument("--seeds", default="42,123")
    ap.add_argument("--methods", default=",".join(METHODS))
    args = ap.parse_args()

    from bdgen.data.dataset import prepare_synthetic
    from bdgen.diffusion.fast_sampling import sample
    from bdgen.diffusion.method import Method
    from bdgen.diffusion.process import ScheduleProcess
    from bdgen.diffusion.sampler import draw_num_rooms
    from bdgen.diffusion.schedules import make_schedule
    from bdgen.diffusion.trainer import TrainConfig, Trainer, seed_everything
    from bdgen.eval.reference import ReferenceStats
    from bdgen.eval.suite import evaluate_seed
    from bdgen.model.denoiser import model_preset
    from bdgen.model.fast_forward import FastDenoiser

    device = torch.device(args.device)
    ds = prepare_synthetic(args.num_graphs, seed=0)
    train, val = ds.split("train"), ds.split("val")
    stats = ds.train_stats()
    schedule = make_schedule("loglinear")
    print(f"device {device}; model {args.model}; {args.steps} steps of batch "
          f"{args.batch_size}; val on {min(args.val_graphs, len(val))} graphs")
    print(f"{'precision':<9} {'step':>6} {'val loss':>9} {'node acc':>9} {'edge acc':>9} "
          f"{'wall s':>7}")
    models = {}
    for precision in ("fp32", "bf16"):
        seed_everything(42)
        model = FastDenoiser(model_preset(args.model), ds.vocab)
        cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, warmup_steps=args.warmup,
                          val_every=max(args.steps // 4, 1), log_every=100, seed=42,
                          precision=precision)
        trainer = Trainer(model, schedule, train.tokens, train.pad_mask,
                          stats.edge_class_weights, cfg, device,
                          val_tokens=val.tokens[: args.val_graphs],
                          val_pad_mask=val.pad_mask[: args.val_graphs])
        rows = []
        t0 = time.perf_counter()
        trainer.run(on_validation=rows.append, progress=False)
        wall = time.perf_counter() - t0
        for r in rows:
            print(f"{precision:<9} {r.step:>6} {r.loss:>9.4f} {r.node_accuracy:>9.4f} "
                  f"{r.edge_accuracy:>9.4f} {wall:>7.0f}", flush=True)
        models[precision] = model.eval()

    ref = ReferenceStats.build(train.tokens.numpy(), train.pad_mask.numpy(), ds.vocab)
    process = ScheduleProcess(schedule.to(device))
    seeds = [int(s) for s in args.seeds.split(",")]
    dist = list(stats.num_rooms_distribution)
    short = [k.removeprefix("eval/") for k in SHOWN]
    print(f"\nsampling the fp32-trained model: {args.samples} x {args.sample_steps} steps, "
          f"seeds {seeds} (mean)")
    print(f"{'method':<47} " + " ".join(f"{k[:11]:>11}" for k in short))
    for name in args.methods.split(","):
        for precision in ("fp32", "bf16"):
            m = dataclasses.replace(Method.parse(name), precision=precision)
            per_seed = []
            for seed in seeds:
                rooms = draw_num_rooms(dist, args.samples, seed).to(device)
                with torch.no_grad():
                    out = sample(models["fp32"], process, ds.vocab, rooms, m,
                                 args.sample_steps, seed, device)
                per_seed.append(evaluate_seed(out.tokens.cpu().numpy(),
                                              out.pad_mask.cpu().numpy(), ref))
            means = [statistics.fmean(float(s[k]) for s in per_seed) for k in SHOWN]
            print(f"{m.format():<47} " + " ".join(f"{v:>11.4f}" for v in means), flush=True)


if __name__ == "__main__":
    main()
