"""v1 training throughput: steps/s and graphs/s of the real training loop, start-up apart.

    .venv/bin/python bench/train.py                          # CPU, small model, batch 256
    .venv/bin/python bench/train.py --device cuda --steps 3000
    .venv/bin/python bench/train.py --legacy-style           # + a DataLoader-style baseline
    .venv/bin/python bench/train.py --precision bf16         # bfloat16 mixed precision

What is timed:

* start-up: building the synthetic dataset (or loading ``--dataset``), the split, the model,
  moving the train split to the device and the first ``--warmup`` steps (allocator / CUDA
  context / torch.compile warm-up), reported separately;
* steady state: ``--steps`` optimiser steps of :meth:`Trainer.train_step` with the loss read
  back every ``--log-every`` steps, exactly as ``bdgen train`` does. The train split is small
  enough (``--num-graphs``) that the run crosses several epoch boundaries; on CPU every step
  is timed and the steps that start an epoch are compared with the median (no stall expected:
  there is no DataLoader and no worker restart).

``--legacy-style`` also times the loop the original code used (a per-item Dataset, a
DataLoader with shuffling, 4 worker processes and default collation, non-fused AdamW), with
the same model, so the two are measured under the same (possibly shared) CPU load.
Reference figures of the original (spec §9.5, issue 2): ~2.2 steps/s on the 2-core CPU,
8-10 s start-up, 1-2 s at every epoch boundary; 39.5 steps/s on one H100 (126,000 steps
in about 53 min).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
import warnings

import torch

LEGACY_STEPS = 126_000


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _fmt_duration(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children (DataLoader workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _timed_loop(step_fn, steps: int, log_every: int, device: torch.device,
                per_step: bool) -> tuple[float, float, list[float]]:
    """Run ``steps`` steps; returns wall seconds, CPU seconds and (CPU only) each step's
    duration. CPU seconds are robust to other processes sharing the cores."""
    times: list[float] = []
    acc = None
    _sync(device)
    c0 = _cpu_seconds()
    t0 = time.perf_counter()
    last = t0
    for i in range(1, steps + 1):
        loss = step_fn()
        acc = loss if acc is None else acc + loss
        if i % log_every == 0:
            float(acc)  # the progress-bar read-back of bdgen train
            acc = None
        if per_step:
            now = time.perf_counter()
            times.append(now - last)
            last = now
    _sync(device)
    return time.perf_counter() - t0, _cpu_seconds() - c0, times


def _legacy_style_step(model, schedule, dataset_tokens, dataset_pads, weights, batch_size,
                       device):
    """The original's data path: per-item dicts, DataLoader(4 workers), default collate."""
    from torch.utils.data import DataLoader, Dataset

    warnings.filterwarnings("ignore", message="This DataLoader will create")

    from bdgen.diffusion.forward import forward_mask
    from bdgen.diffusion.loss import ELBOLoss, sample_t

    class Items(Dataset):
        def __len__(self) -> int:
            return dataset_tokens.shape[0]

        def __getitem__(self, i: int) -> dict:
            return {"tokens": dataset_tokens[i], "pad_mask": dataset_pads[i],
                    "num_rooms": int(dataset_pads[i, :8].sum())}

    loader = DataLoader(Items(), batch_size=batch_size, shuffle=True, drop_last=True,
                        num_workers=4, pin_memory=device.type == "cuda")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.01)
    loss_fn = ELBOLoss(schedule, weights.to(device))

    def batches():
        while True:
            yield from loader   # a new epoch restarts the workers, as in the original

    it = batches()

    def step() -> torch.Tensor:
        batch = next(it)
        x0 = batch["tokens"].to(device)
        pad = batch["pad_mask"].to(device)
        t, _ = sample_t(schedule, x0.shape[0], "legacy", device)
        x_t, mask = forward_mask(x0, pad, schedule.alpha(t)[:, None])
        node_logits, edge_logits = model(x_t, pad, t)
        loss = loss_fn(node_logits, edge_logits, x0, pad, mask, t).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.detach()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--model", default="small")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=0,
                    help="timed steps (default: 40 on CPU, 3000 on CUDA)")
    ap.add_argument("--warmup", type=int, default=0,
                    help="untimed steps counted as start-up (default: 3 CPU, 50 CUDA)")
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--num-graphs", type=int, default=0,
                    help="synthetic graphs (default: 3,000 on CPU so epochs are short; "
                         "25,000 on CUDA)")
    ap.add_argument("--dataset", default=None, help="a prepared dataset file instead")
    ap.add_argument("--is-mode", default="unbiased",
                    choices=["unbiased", "uncorrected", "legacy", "off"])
    ap.add_argument("--compile", action="store_true", help="torch.compile the denoiser")
    ap.add_argument("--compile-mode", default="default",
                    help="torch.compile mode with --compile (default, reduce-overhead, ...)")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                    help="denoiser forward precision (bf16: mixed precision, "
                         "bdgen.model.precision); the legacy-style loop is always fp32")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    ap.add_argument("--legacy-style", action="store_true",
                    help="also time a DataLoader-based loop like the original's")
    ap.add_argument("--round", type=int, default=5,
                    help="with --legacy-style: steps per alternating timing round")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    t_start = time.perf_counter()
    from bdgen.data.dataset import PreparedDataset, prepare_synthetic
    from bdgen.diffusion.objective import FixedScheduleObjective
    from bdgen.diffusion.schedules import make_schedule
    from bdgen.diffusion.trainer import TrainConfig, Trainer, seed_everything
    from bdgen.model.denoiser import count_parameters, model_preset
    from bdgen.model.fast_forward import FastDenoiser
    from bdgen.util.device import resolve_device

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    steps = args.steps or (3000 if cuda else 40)
    warmup = args.warmup or (50 if cuda else 3)
    t_import = time.perf_counter() - t_start

    t0 = time.perf_counter()
    if args.dataset:
        ds = PreparedDataset.load(args.dataset)
    else:
        ds = prepare_synthetic(args.num_graphs or (25_000 if cuda else 3_000), seed=0)
    train = ds.split("train")
    stats = ds.train_stats()
    t_data = time.perf_counter() - t0

    t0 = time.perf_counter()
    seed_everything(0)
    cfg = model_preset(args.model)
    model = FastDenoiser(cfg, ds.vocab)
    tc = TrainConfig(steps=10**9, batch_size=args.batch_size, is_mode=args.is_mode,
                     compile=args.compile, compile_mode=args.compile_mode, log_every=args.log_every,
                     precision=args.precision)
    objective = FixedScheduleObjective(make_schedule({"type": "loglinear"}),
                                       stats.edge_class_weights, tc.is_mode)
    trainer = Trainer(model, objective, train.tokens, train.pad_mask, tc, device)
    model.train()
    for _ in range(warmup):
        trainer.train_step()
    _sync(device)
    t_setup = time.perf_counter() - t0

    legacy_step = None
    if args.legacy_style:
        seed_everything(0)
        model2 = FastDenoiser(cfg, ds.vocab).to(device).train()
        model2.use_reference_modules()
        legacy_step = _legacy_style_step(
            model2, make_schedule({"type": "loglinear"}).to(device), train.tokens,
            train.pad_mask, torch.tensor(stats.edge_class_weights), args.batch_size, device)
        t0 = time.perf_counter()
        for _ in range(warmup):
            legacy_step()
        _sync(device)
        t_legacy_first = time.perf_counter() - t0

    # Timed in alternating rounds when a baseline runs too, so both see the same CPU load.
    round_len = args.round if legacy_step else steps
    wall = wall2 = cpu = cpu2 = 0.0
    times: list[float] = []
    times2: list[float] = []
    done = 0
    while done < steps:
        n = min(round_len, steps - done)
        w, c, t = _timed_loop(trainer.train_step, n, args.log_every, device,
                              per_step=not cuda)
        wall, cpu, times = wall + w, cpu + c, times + t
        if legacy_step:
            w, c, t = _timed_loop(legacy_step, n, args.log_every, device, per_step=not cuda)
            wall2, cpu2, times2 = wall2 + w, cpu2 + c, times2 + t
        done += n
    sps = steps / wall
    name = torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {device} ({name}); torch {torch.__version__}; model {args.model} "
          f"({count_parameters(model):,} params); batch {args.batch_size}; is_mode "
          f"{args.is_mode}; compile {args.compile}; precision {args.precision}")
    print(f"train split: {len(train):,} graphs -> {trainer.batches_per_epoch} batches/epoch; "
          f"{steps} timed steps crossed {trainer.epoch} epoch boundaries")
    print(f"start-up: imports {t_import:.1f} s, dataset {t_data:.1f} s, model + data to "
          f"device + {warmup} warm-up steps {t_setup:.1f} s "
          f"(total {t_import + t_data + t_setup:.1f} s)")
    print(f"steady state: {sps:.2f} steps/s, {sps * args.batch_size:,.0f} graphs/s "
          f"({wall:.1f} s for {steps} steps); CPU time {cpu / steps:.3f} s/step")
    if times:
        median = statistics.median(times)
        first = [times[i] for i in range(len(times))
                 if (warmup + i) % trainer.batches_per_epoch == 0]
        worst = max(first) if first else float("nan")
        print(f"step time: median {median * 1000:.0f} ms, max {max(times) * 1000:.0f} ms; "
              f"epoch-start steps: max {worst * 1000:.0f} ms ({len(first)} of them)")
    total = t_import + t_data + t_setup + LEGACY_STEPS / sps
    print(f"extrapolated {LEGACY_STEPS:,} steps (legacy 500 epochs): {_fmt_duration(total)} "
          f"including start-up")
    if legacy_step:
        sps2 = steps / wall2
        print(f"legacy-style loop (DataLoader 4 workers, per-item collate, dense rows, torch "
              f"dropout, unfused AdamW): {sps2:.2f} steps/s, {sps2 * args.batch_size:,.0f} "
              f"graphs/s; CPU time {cpu2 / steps:.3f} s/step (+ live workers); DataLoader "
              f"start + {warmup} steps {t_legacy_first:.1f} s; median step "
              f"{statistics.median(times2 or [0]) * 1000:.0f} ms, max "
              f"{max(times2, default=0) * 1000:.0f} ms")
        print(f"this loop vs the legacy-style loop: {sps / sps2:.2f}x in wall time, "
              f"{cpu2 / cpu:.2f}x in CPU time per step (alternating rounds of {round_len} "
              "steps; on a shared CPU trust the CPU-time ratio)")


if __name__ == "__main__":
    main()
