"""The ``_compiled`` methods' sampling loop on CUDA: the denoiser's forward and the step's
arithmetic as ``torch.compile``'d kernels (issue 17.4).

Why: at 1000 x 100 on an H200 a step is a few hundred small kernels, each far below the
GPU's bandwidth (docs/BENCHMARKS.md). Compiling fuses the forward's LayerNorm, modulation,
GELU and residual kernels, and the step's softmax, nucleus cut, LLaDA ranking and
remasking arithmetic, into a few kernels each; each whole step replays from a CUDA graph
(:mod:`bdgen.diffusion.step_graphs`; or only the forward,
:class:`~bdgen.diffusion.fast_sampling.GraphedLogits`); attention runs on a Triton kernel
for short sequences (:mod:`bdgen.model.short_attention`, or SDPA's memory-efficient kernel
where that does not apply); bf16 weights are compiled in as constants.

It is the loop of :func:`bdgen.diffusion.fast_sampling.sample_batch` with the step split
in two: the random draws, in the reference's order and shapes (coins, candidates,
remasking; the model draws nothing, so drawing the candidates' numbers before or after it
is the same), then :func:`step_tokens`, the step's arithmetic with no randomness of its
own, built from the same functions as :func:`~bdgen.diffusion.reverse.reverse_step`. So
with ``backend="eager"`` (dynamo tracing, no code generation) the tokens are the
reference's, bit for bit (tests/test_compiled_sampling.py); with inductor's kernels they
differ by rounding, which is why the method name says ``_compiled``.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from bdgen.data.vocab import VocabConfig
from bdgen.diffusion.fast_sampling import CompactLogits, EarlyStop, GraphedLogits
from bdgen.diffusion.method import Method
from bdgen.diffusion.process import ForwardProcess
from bdgen.diffusion.reverse import (
    Plan,
    candidate_draw,
    clean_up,
    coins_from,
    remask_budget,
    remask_with,
    transition,
    uniform,
)
from bdgen.diffusion.step_graphs import forget_loops, step_loop
from bdgen.model.fast_forward import FastDenoiser, real_rows
from bdgen.model.short_attention import block_attention
from bdgen.model.triton_support import runs_on

RECOMPILE_LIMIT = 64
"""Compiled variants kept per function: a step is specialised on its method's settings,
on whether it is the last step and on whether remasking fires, so a sweep over the 22
legacy methods needs more than dynamo's default of 8."""


def step_tokens(plan: Plan, x: Tensor, logits: Tensor, p: Tensor, last_step: bool,
                coins_u: Tensor | None, cand_u: Tensor | None, sigma_max: Tensor | None,
                remask_u: Tensor | None) -> Tensor:
    """One reverse step's tokens from its logits and its draws: steps (1), (3), (4) and,
    where ``remask_u`` is given, (5) of :func:`~bdgen.diffusion.reverse.reverse_step`."""
    coins = None if coins_u is None else coins_from(plan, x, p, coins_u)
    prop = transition(plan, x, logits, p, last_step, coins, cand_u)
    if remask_u is None:
        return prop.x
    assert sigma_max is not None, "a remasking step needs its budget"
    return remask_with(plan, prop.x, prop.probs, sigma_max, remask_u)[0]


def inductor_options() -> dict[str, Any]:
    """Inductor settings that keep the generated kernels the same in every process: no
    choice by timing among kernel configurations (a reduction's block size sets its
    summation order, and a choice made by benchmarking could differ between processes).
    ``autotune_pointwise`` off covers pointwise and reduction kernels; ``deterministic``
    (in torch releases that have it, not 2.11) is inductor's own switch. Two fresh
    processes gave identical tokens on an H200 (docs/BENCHMARKS.md)."""
    from torch._inductor import config

    options: dict[str, Any] = {"triton.autotune_pointwise": False}
    if hasattr(config, "deterministic"):
        options["deterministic"] = True
    return options


class _Compiled:
    """``torch.compile`` of the denoiser (per model) and of :func:`step_tokens`, made once
    per process and backend."""

    def __init__(self, backend: str) -> None:
        dynamo = torch._dynamo.config  # type: ignore[attr-defined]
        for name in ("recompile_limit", "cache_size_limit"):  # the name changed in torch 2.6
            if hasattr(dynamo, name):
                setattr(dynamo, name, max(getattr(dynamo, name), RECOMPILE_LIMIT))
        self.backend = backend
        self.options = inductor_options() if backend == "inductor" else None
        self.step = torch.compile(step_tokens, backend=backend, options=self.options)
        # A compiled module refers to its model, so an entry lives as long as the process
        # (a sweep samples a handful of models; compiling one again costs 20-70 s).
        self.models: dict[tuple[nn.Module, bool, bool], tuple[Any, nn.Module]] = {}

    def model(self, model: nn.Module, short_attention: bool = True,
              freeze: bool = False) -> nn.Module:
        """The compiled forward of ``model``; ``short_attention``: a
        :class:`~bdgen.model.fast_forward.FastDenoiser`'s attention on our Triton kernel;
        ``freeze``: inductor's freezing, the weights compiled in as constants, so what
        depends on them alone (bf16 autocast's weight casts: 5.5-6 ms of GPU kernels of a
        1000 x 100 call, H200) is computed once. A frozen forward is compiled again when
        the weights change in place (:func:`weights_stamp`)."""
        key = (model, short_attention and isinstance(model, FastDenoiser), freeze)
        stamp = weights_stamp(model) if freeze else None
        if key in self.models and self.models[key][0] != stamp:
            # Dynamo would find its code for these parameters (the same tensors) again, with
            # the old values compiled in: all compiled code and kept graphs go.
            torch._dynamo.reset()
            self.models.clear()
            forget_loops()
        if key not in self.models:
            forward = _ShortAttention(cast(FastDenoiser, model)) if key[1] else model
            compiled_model = torch.compile(forward, backend=self.backend, options=self.options)
            self.models[key] = (stamp, _MemEfficientAttention(cast(nn.Module, compiled_model),
                                                              freeze))
        return self.models[key][1]


def weights_stamp(model: nn.Module) -> tuple[tuple[int, int], ...]:
    """Where each parameter and buffer lies and its in-place version counter: changes when
    the weights are loaded or updated in place, or replaced."""
    return tuple((t.data_ptr(), t._version) for t in (*model.parameters(), *model.buffers()))


class _ShortAttention(nn.Module):
    """A :class:`~bdgen.model.fast_forward.FastDenoiser`'s sampling forward with attention
    on our Triton kernel on CUDA (:func:`bdgen.model.short_attention.block_attention`);
    elsewhere its own forward (on CPU: the room-count buckets, no PAD key)."""

    def __init__(self, model: FastDenoiser) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: Tensor, pad_mask: Tensor, t: Tensor,
                real_rows: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if tokens.device.type != "cuda":
            return self.model.forward(tokens, pad_mask, t, real_rows=real_rows)
        return self.model.forward(tokens, pad_mask, t, real_rows=real_rows,
                                  attention=block_attention)


class _MemEfficientAttention(nn.Module):
    """A compiled denoiser whose SDPA calls on CUDA take the memory-efficient kernel (math
    as the fallback), which beats cuDNN's flash attention on 36-token sequences
    (docs/BENCHMARKS.md); ``freeze``: called with inductor's freezing switched on, which
    dynamo reads from the global config when it traces (``torch.compile``'s options reach
    only inductor, too late for the parameters to be made constants)."""

    def __init__(self, compiled: nn.Module, freeze: bool = False) -> None:
        super().__init__()
        self.compiled, self.freeze = compiled, freeze

    def forward(self, tokens: Tensor, *args: Any, **kwargs: Any) -> Any:
        with contextlib.ExitStack() as stack:
            if self.freeze:
                from torch._inductor import config

                stack.enter_context(config.patch(freezing=True))
            if tokens.device.type == "cuda":
                stack.enter_context(sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION,
                                                 SDPBackend.MATH]))
            return self.compiled(tokens, *args, **kwargs)


@functools.cache
def compiled(backend: str = "inductor") -> _Compiled:
    return _Compiled(backend)


@torch.inference_mode()
def sample_batch_compiled(model: nn.Module, process: ForwardProcess, vocab: VocabConfig,
                          num_rooms: Tensor, method: Method, steps: int,
                          generator: torch.Generator, *, early_stop: bool = True,
                          cuda_graphs: bool | None = None, backend: str = "inductor",
                          pack_rows: bool | None = None,
                          short_attention: bool = True,
                          whole_steps: bool | None = None, reuse: bool | None = None,
                          freeze: bool | None = None) -> tuple[Tensor, int, int]:
    """:func:`bdgen.diffusion.fast_sampling.sample_batch` with compiled kernels (module
    docstring); the whole batch goes through the model at every step (no row compaction).

    ``backend``: ``torch.compile``'s; ``"eager"`` traces without generating code (the
    reference's tokens; tests). ``cuda_graphs``: default on CUDA. ``pack_rows``: the
    token-wise layers skip PAD rows, found once for the batch (:meth:`~bdgen.model.
    fast_forward.FastDenoiser.trunk_sampling`); default on CUDA for a
    :class:`~bdgen.model.fast_forward.FastDenoiser` except in bf16, where the rows' gather
    and scatter cost more than the skipped rows (fp32: 256 ms packed vs 301 ms dense; bf16:
    121 vs 115 ms, H200, 1000 x 100; the tokens were the same either way).
    ``short_attention``: attention on our Triton kernel (:mod:`bdgen.model.short_attention`;
    a fused MLP kernel was measured and not kept, docs/BENCHMARKS.md) where it runs
    (:func:`~bdgen.model.triton_support.runs_on`); False: SDPA.
    ``whole_steps`` (default: with ``cuda_graphs``): the step's state on the device,
    each whole step one CUDA graph (:mod:`bdgen.diffusion.step_graphs`; on CPU, or with
    ``cuda_graphs=False``, the same device-side steps without graphs); False: the loop
    below, with only the forward replayed from a graph. ``reuse``: the whole-step loop
    and its graphs kept for the next batch of the same shape
    (:func:`~bdgen.diffusion.step_graphs.step_loop`; default with ``cuda_graphs``).
    ``freeze``: the weights compiled in as constants (:meth:`_Compiled.model`); default in
    bf16, where it removes the weight casts (the tokens were the same either way, H200).
    """
    device = num_rooms.device
    if cuda_graphs is None:
        cuda_graphs = device.type == "cuda"
    if whole_steps is None:
        whole_steps = cuda_graphs
    if pack_rows is None:  # what measured faster on an H200 (docs/BENCHMARKS.md)
        pack_rows = (device.type == "cuda" and isinstance(model, FastDenoiser)
                     and method.precision != "bf16")
    if freeze is None:
        freeze = method.precision == "bf16"
    kernels = compiled(backend)
    forward = kernels.model(model, short_attention and runs_on(device), freeze)
    plan = Plan.build(method, process, vocab, num_rooms, steps)
    rows = real_rows(plan.pad_mask) if pack_rows else None
    stop = EarlyStop(plan, early_stop)
    if whole_steps:
        loop = step_loop(plan, forward, kernels.step, generator, rows, cuda_graphs, reuse)
        calls = 0
        for i in range(steps - 1, -1, -1):
            if stop.done(loop.x):
                break
            loop.step(i)
            calls += 1
            stop.record(loop.x)
        loop.end()
        logits_fn = CompactLogits(forward, plan.pad_mask, method.precision, None, None, rows)
        x = clean_up(plan, loop.x.clone(), logits_fn)  # a kept loop's x is the next batch's
        calls += logits_fn.calls
        return x, calls, calls * x.shape[0]
    logits_fn = CompactLogits(forward, plan.pad_mask, method.precision, None,
                              GraphedLogits(forward, rows) if cuda_graphs else None, rows)
    x = plan.initial()
    for i in range(steps - 1, -1, -1):
        if stop.done(x):
            break
        t_now, _ = plan.times(i)
        p = plan.p_unmask(i, plan.pad_mask)
        coins_u = (uniform(generator, x.shape, device)
                   if method.unmasking == "random" else None)
        logits = logits_fn(x, t_now)
        cand_u = candidate_draw(logits, method, generator)
        fires = i in plan.fire
        sigma_max = remask_budget(plan, i) if fires else None
        remask_u = uniform(generator, x.shape, device) if fires else None
        x = kernels.step(plan, x, logits, p, i == 0, coins_u, cand_u, sigma_max, remask_u)
        stop.record(x)
    x = clean_up(plan, x, logits_fn)
    return x, logits_fn.calls, logits_fn.rows
