"""The reverse process, reference loop: MDLM sampling with ReMDM remasking (spec §5).

:func:`sample_batch` is the whole algorithm: start fully masked, run
:func:`bdgen.diffusion.reverse.reverse_step` for i = N-1 .. 0 on the whole batch, clean up.
One loop for both forward processes: a fixed schedule gives p_unmask/sigma_max ``[B, 1]``,
learned rates ``[B, S]``, and the step only broadcasts. Node and edge logits are one
``[B, S, 15]`` tensor (edge rows padded with -inf), so a step is a handful of batched ops.

The fast sampler (:mod:`bdgen.diffusion.fast_sampling`: early stop, row compaction,
micro-batches, CUDA graphs, concurrent chunks) has the same interface and gives the same
tokens on CPU (tested); the pipeline uses it.

Room counts come from :func:`draw_num_rooms`, a CPU generator separate from the token
stream (seeded with the run's seed), so for a given seed every method samples the same
room counts: methods are compared on identical size distributions, and rooms W1/KL measure
the seed, not the method. (The original code had this property by accident: on a GPU the
room-count draw was the only consumer of the CPU random stream.)

Determinism: the same seed, batch size and device give the same samples. CPU and CUDA give
different samples (different random streams and float rounding); so do different batch
sizes (draws are batch-shaped). Chunk c of a run draws from its own generator on the
sampling device, seeded with ``derive_seed(seed, "tokens", c)``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from bdgen.data.vocab import EDGE_VOCAB_SIZE, VocabConfig
from bdgen.diffusion.method import Method
from bdgen.diffusion.process import ForwardProcess
from bdgen.diffusion.reverse import Plan, StepInfo, V, clean_up, reverse_step
from bdgen.errors import BdgenError
from bdgen.model.precision import autocast

CPU_BATCH = 128           # default sampling chunk on CPU (the step's tensors stay in cache)


@dataclass
class SampleOutput:
    tokens: Tensor        # int64 [N, S]
    pad_mask: Tensor      # bool  [N, S]
    num_rooms: Tensor     # int64 [N]
    model_calls: int      # forward calls (all chunks)
    rows_evaluated: int   # sum over calls of the rows computed (compaction saves these)


def derive_seed(seed: int, *parts: object) -> int:
    """A stable 63-bit seed for a named sub-stream of ``seed``."""
    h = hashlib.sha256(repr((int(seed), *parts)).encode()).digest()
    return int.from_bytes(h[:8], "big") & ((1 << 63) - 1)


def draw_num_rooms(distribution: Sequence[float], n: int, seed: int) -> Tensor:
    """``1 + multinomial(distribution, n)`` from a CPU generator seeded with ``seed`` alone
    (independent of the method and of the token stream, see the module docstring)."""
    p = torch.as_tensor(list(distribution), dtype=torch.float32)
    if p.dim() != 1 or p.numel() < 1 or bool((p < 0).any()) or not float(p.sum()) > 0:
        raise BdgenError(f"num_rooms_distribution must be a non-negative histogram with "
                         f"positive mass, got {list(distribution)}")
    g = torch.Generator().manual_seed(int(seed))
    return 1 + torch.multinomial(p, n, replacement=True, generator=g)


def model_logits(model: nn.Module, x: Tensor, pad_mask: Tensor, t: Tensor | float,
                 precision: str = "fp32", real_rows: Tensor | None = None) -> Tensor:
    """``[B, S, V]`` float32 logits; the forward pass runs at the method's ``precision``.
    ``real_rows``: the batch's real rows, for a model that skips PAD rows with them
    (:meth:`bdgen.model.fast_forward.FastDenoiser.trunk_sampling`; PAD rows' logits are then
    those of a zero trunk output)."""
    with autocast(x.device, precision):
        node, edge = (model(x, pad_mask, t) if real_rows is None
                      else model(x, pad_mask, t, real_rows=real_rows))
    edge = torch.nn.functional.pad(edge.float(), (0, V - EDGE_VOCAB_SIZE), value=-torch.inf)
    return torch.cat([node.float(), edge], dim=1)


def step_time(t: float, device: torch.device) -> Tensor:
    """A step's time as a 0-d float32 tensor: one time for every row, which the model
    embeds once (a tensor, not a float, so a compiled model does not specialise on it)."""
    return torch.full((), t, dtype=torch.float32, device=device)


def trace_entry(i: int, plan: Plan, x: Tensor, info: StepInfo) -> dict[str, Any]:
    """One executed step, as recorded by ``trace`` (tests/profiling)."""
    b = x.shape[0]
    return {"i": i, "t_now": plan.times(i)[0], "remask_fired": i in plan.fire, "x": x.cpu(),
            "n_masked_before": info.is_mask.sum(-1).cpu(), "p_unmask": info.p_unmask.cpu(),
            "revealed": info.reveal.sum(-1).cpu(),
            "remasked": (info.remasked.sum(-1).cpu() if info.remasked is not None
                         else torch.zeros(b, dtype=torch.long))}


def check_request(vocab: VocabConfig, num_rooms: Tensor, steps: int) -> None:
    if steps < 1:
        raise BdgenError(f"steps must be >= 1, got {steps}")
    if int(num_rooms.shape[0]) < 1:
        raise BdgenError(f"num_samples must be >= 1, got {int(num_rooms.shape[0])}")
    if int(num_rooms.min()) < 1 or int(num_rooms.max()) > vocab.n_max:
        raise BdgenError(f"num_rooms must lie in [1, {vocab.n_max}]")


@torch.inference_mode()
def sample_batch(model: nn.Module, process: ForwardProcess, vocab: VocabConfig,
                 num_rooms: Tensor, method: Method, steps: int, generator: torch.Generator,
                 *, trace: list[dict[str, Any]] | None = None) -> tuple[Tensor, int, int]:
    """Sample one batch; returns (tokens int64 [B, S], model calls, rows evaluated).

    ``trace``: if given, one dict per step (:func:`trace_entry`) is appended.
    """
    check_request(vocab, num_rooms, steps)
    plan = Plan.build(method, process, vocab, num_rooms, steps)
    calls = 0

    def logits_fn(x: Tensor, t: float) -> Tensor:
        nonlocal calls
        calls += 1
        return model_logits(model, x, plan.pad_mask, step_time(t, x.device), method.precision)

    x = plan.initial()
    for i in range(steps - 1, -1, -1):
        x, info = reverse_step(plan, x, i, logits_fn, generator)
        if trace is not None:
            trace.append(trace_entry(i, plan, x, info))
    x = clean_up(plan, x, logits_fn)
    return x, calls, calls * x.shape[0]


def chunk_starts(n: int, batch_size: int | None, device: torch.device) -> tuple[list[int], int]:
    """Chunk offsets and size: default all at once on CUDA, 128 on CPU (per-step tensors of
    1000 rows fall out of cache)."""
    if batch_size is None:
        batch_size = min(n, CPU_BATCH) if device.type == "cpu" else n
    if int(batch_size) < 1:
        raise BdgenError(f"batch_size must be >= 1, got {batch_size}")
    return list(range(0, n, int(batch_size))), int(batch_size)


def chunk_generator(seed: int, c: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(derive_seed(seed, "tokens", c))


def sample(model: nn.Module, process: ForwardProcess, vocab: VocabConfig, num_rooms: Tensor,
           method: Method, steps: int, seed: int, device: torch.device | str = "cpu",
           batch_size: int | None = None, progress: Callable[[int], None] | None = None
           ) -> SampleOutput:
    """Sample ``len(num_rooms)`` graphs in chunks of ``batch_size``, one after the other;
    ``progress(n_done)`` is called after each chunk."""
    device = torch.device(device)
    check_request(vocab, num_rooms, steps)
    n = int(num_rooms.shape[0])
    starts, bs = chunk_starts(n, batch_size, device)
    out, calls, rows = [], 0, 0
    for c, start in enumerate(starts):
        x, k, r = sample_batch(model, process, vocab, num_rooms[start:start + bs].to(device),
                               method, steps, chunk_generator(seed, c, device))
        out.append(x.cpu())
        calls, rows = calls + k, rows + r
        if progress is not None:
            progress(min(start + bs, n))
    pad_mask = torch.from_numpy(vocab.pad_mask_table)[num_rooms.cpu()]
    return SampleOutput(torch.cat(out), pad_mask, num_rooms.cpu().long(), calls, rows)
