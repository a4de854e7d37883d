"""Whole reverse steps of the ``_compiled`` loop replayed from CUDA graphs (issue 17.4).

Why: with the compiled forward and step, a 1000-row step is ~0.8 ms of GPU work, and the
host needs longer than that to issue it: the time and rate tensors, the draws, the
forward graph's input copies, dynamo's guards on the compiled step, the flag copy (H200:
104 ms per 100-step call, of which 83 ms are GPU kernels, docs/BENCHMARKS.md). A graph of
the whole step is issued with one call, so the GPU, not the host, sets the pace.

What makes a step capturable is that nothing in it depends on a host value that changes
from step to step. :class:`StepLoop` keeps the batch's tokens and the step index on the
device and updates both inside the step, reads the step's times from tables made once
(``(i + 1) / N`` and ``i / N`` computed in Python, as :meth:`~bdgen.diffusion.reverse.
Plan.times` does), and draws from generators registered with the graphs, so a replay
draws what the same draws would give outside a graph. The host-level choices left are
the kind of step: whether remasking fires and whether it is the last step, one graph each.

The first step of each kind runs outside a graph, on a side stream (the warm-up that
capture needs, here doing real work); the second is captured and replayed, and so is
every later one. A kind that occurs once (the first, the last step) is never captured.
With ``graphs=False`` every step runs as written, which is how the CPU tests check it
against the reference loop; on CUDA the same tests check that the graphs give the tokens of
the per-step compiled loop bit for bit (tests/test_step_graphs.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from bdgen.diffusion.reverse import Plan, candidate_draw, uniform
from bdgen.diffusion.sampler import model_logits

StepFn = Callable[..., Tensor]
""":func:`bdgen.diffusion.compiled_sampling.step_tokens`, compiled or not."""


def generators_of(generator: Any) -> list[torch.Generator]:
    """The torch generators a draw source uses: itself, or each block's of a
    :class:`~bdgen.diffusion.seed_batch.RowStreams` (registered with every graph)."""
    if isinstance(generator, torch.Generator):
        return [generator]
    return [g for g, _ in generator.blocks]


class StepLoop:
    """The compiled loop's state on the device, one reverse step at a time (module
    docstring). :meth:`step` runs step i; the tokens are :attr:`x`, updated in place."""

    def __init__(self, plan: Plan, forward: nn.Module, step_fn: StepFn, generator: Any,
                 real_rows: Tensor | None, graphs: bool) -> None:
        dev, n = plan.pad_mask.device, plan.steps
        self.plan, self.forward, self.step_fn = plan, forward, step_fn
        self.generator, self.real_rows = generator, real_rows
        self.x = plan.initial()
        self.i = torch.full((1,), n - 1, dtype=torch.long, device=dev)  # the next step
        self.t_now = torch.tensor([(i + 1) / n for i in range(n)], dtype=torch.float64,
                                  device=dev)
        self.t_next = torch.tensor([i / n for i in range(n)], dtype=torch.float64,
                                   device=dev)
        self.graphs_on = graphs
        self.graphs: dict[tuple[bool, bool], torch.cuda.CUDAGraph] = {}
        self.seen: set[tuple[bool, bool]] = set()
        self.side = torch.cuda.Stream(dev) if graphs else None

    def _times(self) -> tuple[Tensor, Tensor]:
        """float64 ``[B]`` t_now and t_next of the step at :attr:`i`, as ``torch.full`` of
        :meth:`~bdgen.diffusion.reverse.Plan.times` gives them (no host read of i)."""
        b = self.x.shape[0]
        return (self.t_now.index_select(0, self.i).expand(b).contiguous(),
                self.t_next.index_select(0, self.i).expand(b).contiguous())

    def _body(self, fires: bool, last: bool) -> None:
        """Step :attr:`i` of :func:`~bdgen.diffusion.compiled_sampling.sample_batch_compiled`'s
        loop, its draws in the same order, then ``i -= 1``; device work only."""
        plan, method, x = self.plan, self.plan.method, self.x
        t_now, t_next = self._times()
        # Plan.p_unmask's and remask_budget's arguments: float32 t_now for the one, float64
        # for the other (the processes promote as the spec says).
        p = plan.process.p_unmask(t_now.to(torch.float32), t_next, plan.pad_mask)
        coins_u = (uniform(self.generator, x.shape, x.device)
                   if method.unmasking == "random" else None)
        logits = model_logits(self.forward, x, plan.pad_mask, t_now[0].to(torch.float32),
                              method.precision, self.real_rows)
        cand_u = candidate_draw(logits, method, self.generator)
        sigma_max = (plan.process.sigma_max(t_now, t_next, plan.pad_mask)
                     if fires else None)
        remask_u = uniform(self.generator, x.shape, x.device) if fires else None
        x.copy_(self.step_fn(plan, x, logits, p, last, coins_u, cand_u, sigma_max, remask_u))
        self.i.sub_(1)

    def step(self, i: int) -> None:
        """Run step i (the steps run in order N-1 .. 0)."""
        kind = (i in self.plan.fire, i == 0)
        if not self.graphs_on:
            self._body(*kind)
        elif kind in self.graphs:
            self.graphs[kind].replay()
        elif kind in self.seen:
            self.graphs[kind] = self._capture(kind)
            self.graphs[kind].replay()
        else:
            self.seen.add(kind)
            self._on_side_stream(kind)

    def _on_side_stream(self, kind: tuple[bool, bool]) -> None:
        """The step outside a graph, on a side stream: what ``torch.cuda.graph`` asks of a
        warm-up before capture (library handles and workspaces made outside it)."""
        assert self.side is not None
        main = torch.cuda.current_stream(self.x.device)
        self.side.wait_stream(main)
        with torch.cuda.stream(self.side):
            self._body(*kind)
        main.wait_stream(self.side)

    def _capture(self, kind: tuple[bool, bool]) -> torch.cuda.CUDAGraph:
        """A graph of one step of ``kind``. Capture records the kernels without running
        them, so it changes neither the tokens, the step index nor the generators. It is
        begun and ended by hand on the side stream: ``torch.cuda.graph`` would also wait
        for the GPU and empty the allocator's cache, which a capture in the middle of a
        sampling loop does not need."""
        assert self.side is not None
        graph = torch.cuda.CUDAGraph()
        for g in generators_of(self.generator):
            graph.register_generator_state(g)
        with torch.cuda.stream(self.side):
            graph.capture_begin()
            try:
                self._body(*kind)
            finally:
                graph.capture_end()
        return graph
