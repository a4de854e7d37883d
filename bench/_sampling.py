"""What the sampling benchmarks (``bench/sample.py``, ``bench/guided.py``) share: their
common command-line options, the perturbed random model they time when no checkpoint is
given, the timer and the header line."""

from __future__ import annotations

import argparse
import time

import torch

from bdgen.data.vocab import RPLAN_VOCAB
from bdgen.diffusion.process import ScheduleProcess
from bdgen.diffusion.schedules import make_schedule
from bdgen.model.denoiser import MODEL_PRESETS
from bdgen.model.fast_forward import FastDenoiser

RPLAN_ROOMS = [0.0, 0.0, 0.0, 0.003, 0.072, 0.311, 0.362, 0.252]  # spec §1.9


def add_common_args(ap: argparse.ArgumentParser) -> None:
    """The options both benchmarks take: device, sizes, model, seed, threads."""
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--num-samples", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--model", default=None, help="checkpoint (default: random small model)")
    ap.add_argument("--preset", default="small", choices=sorted(MODEL_PRESETS))
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def device_of(args: argparse.Namespace) -> torch.device:
    """Apply ``--threads`` and return the ``--device``."""
    if args.threads:
        torch.set_num_threads(args.threads)
    return torch.device(args.device)


def random_model(preset: str, device: torch.device):
    """The ``preset`` FastDenoiser as initialised from a generator seeded 0, every parameter
    moved by 0.05 x N(0, 1) (a generator seeded 0) so that logits are not all zero, on
    ``device`` in eval mode, with the loglinear process: (model, process, vocab, rooms)."""
    with torch.random.fork_rng(devices=[]):  # the same weights in every process
        torch.manual_seed(0)
        model = FastDenoiser(MODEL_PRESETS[preset], RPLAN_VOCAB)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    process = ScheduleProcess(make_schedule("loglinear")).to(device)
    return model.to(device).eval(), process, RPLAN_VOCAB, RPLAN_ROOMS


def timed(fn, device: torch.device):
    """(fn(), seconds), synchronised with the device on CUDA."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def run_line(args: argparse.Namespace, device: torch.device) -> str:
    """The first line of a report: device, threads, sizes, model, torch version."""
    return (f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}"
            f", {torch.get_num_threads()} threads), {args.num_samples} samples x {args.steps} "
            f"steps, model {args.model or args.preset}, torch {torch.__version__}")
