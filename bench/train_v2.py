"""v2 vs v1 throughput, side by side: training steps/s and sampling samples/s.

    .venv/bin/python bench/train_v2.py                       # CPU, tiny model, quick
    .venv/bin/python bench/train_v2.py --device cuda --model small --batch-size 256 \
        --train-steps 300 --samples 1000 --sample-batch 64 --steps 100

Both models are freshly initialised (throughput does not depend on training progress, except
that LLaDA without remasking stops early once every position is revealed, which is the same
for v1 and v2). v1 = loglinear schedule with importance sampling (legacy objective); v2 = the
rate network with STGS and the per-position ELBO (spec §4.4). Sampling runs the two methods of
the v2 study for each model. The first ``--warmup`` training steps and one sampling batch are
excluded from the timings.
"""

from __future__ import annotations

import argparse
import time

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--model", default="tiny", help="model preset (tiny, small, base)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--train-steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--sample-batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=100, help="sampling steps N")
    ap.add_argument("--num-graphs", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from bdgen.data.dataset import prepare_synthetic
    from bdgen.diffusion.fast_sampling import sample
    from bdgen.diffusion.method import Method
    from bdgen.diffusion.objective import FixedScheduleObjective, LearnedRatesObjective
    from bdgen.diffusion.process import RateNetworkProcess, ScheduleProcess
    from bdgen.diffusion.rate_network import RateNetwork
    from bdgen.diffusion.sampler import draw_num_rooms
    from bdgen.diffusion.schedules import make_schedule
    from bdgen.diffusion.trainer import TrainConfig, Trainer
    from bdgen.model.denoiser import count_parameters, model_preset
    from bdgen.model.fast_forward import FastDenoiser

    device = torch.device(args.device)
    ds = prepare_synthetic(args.num_graphs, seed=0)
    train = ds.split("train")
    stats = ds.train_stats()
    cfg = model_preset(args.model)
    total = args.warmup + args.train_steps
    rows = []
    for version in ("v1", "v2"):
        torch.manual_seed(0)
        model = FastDenoiser(cfg, ds.vocab)
        tc = TrainConfig(steps=total, batch_size=args.batch_size, warmup_steps=0,
                         is_mode="uncorrected" if version == "v1" else "off",
                         checkpoint_every=10**9, val_every=10**9, log_every=10**9)
        objective = (FixedScheduleObjective(make_schedule({"type": "loglinear"}),
                                            stats.edge_class_weights, tc.is_mode)
                     if version == "v1" else
                     LearnedRatesObjective(RateNetwork(vocab=ds.vocab), stats.edge_class_weights))
        trainer = Trainer(model, objective, train.tokens, train.pad_mask, tc, device)
        rate = getattr(objective, "rate_network", None)
        model.train()
        for _ in range(args.warmup):
            trainer.train_step()
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(args.train_steps):
            loss = trainer.train_step()
        float(loss)
        _sync(device)
        train_sps = args.train_steps / (time.perf_counter() - t0)

        model.eval()
        process = (ScheduleProcess(make_schedule({"type": "loglinear"})).to(device)
                   if version == "v1" else RateNetworkProcess(rate.eval()))
        rooms = draw_num_rooms(stats.num_rooms_distribution, args.samples, seed=0)
        sampling = {}
        for name in ("llada_topp0.9_no_remask", "llada_topp0.9_remdm_confidence_tsw1.0"):
            method = Method.parse(name)
            sample(model, process, ds.vocab, rooms[:args.sample_batch], method, args.steps, 1,
                   device, args.sample_batch)  # warm-up batch
            _sync(device)
            t0 = time.perf_counter()
            out = sample(model, process, ds.vocab, rooms, method, args.steps, 0, device,
                         args.sample_batch)
            _sync(device)
            sampling[name] = (args.samples / (time.perf_counter() - t0), out.model_calls)
        extra = count_parameters(rate) if version == "v2" else 0
        rows.append((version, count_parameters(model) + extra, train_sps, sampling))

    print(f"device {device}, model {args.model}, train batch {args.batch_size}, "
          f"{args.train_steps} timed steps; sampling {args.samples} samples, batch "
          f"{args.sample_batch}, N = {args.steps}")
    names = list(rows[0][3])
    head = f"{'':4} {'params':>10} {'train steps/s':>14}" + "".join(
        f" {n[:32]:>34}" for n in names)
    print(head)
    for version, params, sps, sampling in rows:
        cells = "".join(f" {f'{sampling[n][0]:.1f} samples/s ({sampling[n][1]} calls)':>34}"
                        for n in names)
        print(f"{version:4} {params:>10,} {sps:>14.2f}{cells}")
    v1, v2 = rows
    print(f"v2/v1 training speed: {v2[2] / v1[2]:.2f}x; sampling: " + ", ".join(
        f"{n}: {v2[3][n][0] / v1[3][n][0]:.2f}x" for n in names))


if __name__ == "__main__":
    main()
