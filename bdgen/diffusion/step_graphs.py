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
Plan.times` does; a fixed schedule's rates too), and draws from generators registered with
the graphs, so a replay draws what the same draws would give outside a graph. The host-
level choices left are the kind of step: whether remasking fires and whether it is the
last step, one graph each.

The first step of each kind runs outside a graph, on a side stream (the warm-up that
capture needs, here doing real work); the second is captured and replayed, and so is every
later one. A kind that occurs once in a batch (the first, the last step) is captured at
the next batch: a loop and its graphs are kept for the next batch of the same model,
method and shape (:func:`step_loop`), which only sets the loop's state. With
``graphs=False`` every step runs as written, which is how the CPU tests check it against
the reference loop; on CUDA the same tests check that the graphs give the tokens of the
per-step compiled loop bit for bit (tests/test_step_graphs.py).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from bdgen.diffusion.fast_sampling import on_side_stream, own_cublas_workspace
from bdgen.diffusion.process import ScheduleProcess
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
        t_now = torch.tensor([(i + 1) / n for i in range(n)], dtype=torch.float64, device=dev)
        t_next = torch.tensor([i / n for i in range(n)], dtype=torch.float64, device=dev)
        self.t_now, self.t_next, self.t_model = t_now, t_next, t_now.to(torch.float32)
        # A fixed schedule's rates depend on t alone, elementwise: every step's, made once
        # for one row, are what Plan.p_unmask and remask_budget give each row of that step.
        # Learned rates depend on the positions too and run the rate network each step.
        self.rates: tuple[Tensor, Tensor] | None = None
        if isinstance(plan.process, ScheduleProcess):
            self.rates = (plan.process.p_unmask(self.t_model, t_next, plan.pad_mask),
                          plan.process.sigma_max(t_now, t_next, plan.pad_mask))
        self.caller: torch.Generator | None = None  # whose state a kept loop draws from
        self.graphs_on = graphs
        self.graphs: dict[tuple[bool, bool], torch.cuda.CUDAGraph] = {}
        self.seen: set[tuple[bool, bool]] = set()
        self.side = torch.cuda.Stream(dev) if graphs else None

    def begin(self, plan: Plan, generator: torch.Generator) -> None:
        """Start a batch of this loop's model, method, shape and steps: the pad mask, the
        tokens and the step index set in place, the draws continuing ``generator``'s
        stream (its state copied into the generator the graphs draw from)."""
        self.plan.pad_mask.copy_(plan.pad_mask)
        self.x.copy_(self.plan.initial())
        self.i.fill_(self.plan.steps - 1)
        self.caller = generator
        self.generator.set_state(generator.get_state())

    def end(self) -> None:
        """Finish a batch: the caller's generator is left where the draws left it, as if
        it had drawn them itself."""
        if self.caller is not None:
            self.caller.set_state(self.generator.get_state())
            self.caller = None

    def _at_i(self, table: Tensor) -> Tensor:
        """Row :attr:`i` of a per-step table, for every row of the batch (no host read)."""
        row = table.index_select(0, self.i)
        return row.expand(self.x.shape[0], *row.shape[1:]).contiguous()

    def _rates(self, fires: bool) -> tuple[Tensor, Tensor | None]:
        """This step's p_unmask and, where remasking fires, sigma_max."""
        plan = self.plan
        if self.rates is not None:
            p_table, sigma_table = self.rates
            return self._at_i(p_table), self._at_i(sigma_table) if fires else None
        # Plan.p_unmask's and remask_budget's arguments: float32 t_now for the one,
        # float64 for the other (the processes promote as the spec says).
        t_now, t_next = self._at_i(self.t_now), self._at_i(self.t_next)
        p = plan.process.p_unmask(t_now.to(torch.float32), t_next, plan.pad_mask)
        return p, plan.process.sigma_max(t_now, t_next, plan.pad_mask) if fires else None

    def _body(self, fires: bool, last: bool) -> None:
        """Step :attr:`i` of :func:`~bdgen.diffusion.compiled_sampling.sample_batch_compiled`'s
        loop, its draws in the same order, then ``i -= 1``; device work only."""
        plan, method, x = self.plan, self.plan.method, self.x
        p, sigma_max = self._rates(fires)
        coins_u = (uniform(self.generator, x.shape, x.device)
                   if method.unmasking == "random" else None)
        t = self.t_model.index_select(0, self.i).view(())
        logits = model_logits(self.forward, x, plan.pad_mask, t, method.precision,
                              self.real_rows)
        cand_u = candidate_draw(logits, method, self.generator)
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
            # outside a graph, on a side stream: what ``torch.cuda.graph`` asks of a
            # warm-up before capture (library handles and workspaces made outside it)
            assert self.side is not None
            with on_side_stream(self.side):
                self._body(*kind)

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
        # capture_begin resets the generators' device-side seed and offset on the capture
        # stream, which replays still queued on the main stream read: it waits for them.
        with on_side_stream(self.side), own_cublas_workspace():
            graph.capture_begin()
            try:
                self._body(*kind)
            finally:
                graph.capture_end()
        return graph



KEPT_LOOPS = 4
"""Loops kept for reuse, the most recently used: enough for a method's chunks and seeds
sampled one after the other. Each keeps its model alive and its graphs' memory (tens of
MB at 1000 rows)."""

_kept: OrderedDict[tuple[Any, ...], StepLoop] = OrderedDict()


def forget_loops() -> None:
    """Drop the kept loops (their graphs replay the kernels they were captured with)."""
    _kept.clear()


def step_loop(plan: Plan, forward: nn.Module, step_fn: StepFn, generator: Any,
              real_rows: Tensor | None, graphs: bool, reuse: bool | None = None) -> StepLoop:
    """The loop for one batch, :meth:`StepLoop.begin` called: with graphs, one torch
    generator and no packed rows, the loop of an earlier batch of the same model, method,
    forward process, shape and steps, whose graphs are already captured; else a new one.
    Why: the warm-up steps and the captures are paid once, not per batch (a sampling call
    of several chunks, a method's seeds one after the other). Call :meth:`StepLoop.end`
    after the last step. ``reuse``: default with graphs (without, a loop costs nothing to
    make; tests reuse loops on CPU to check that a reused loop samples as a new one)."""
    reuse = graphs if reuse is None else reuse
    if not (reuse and isinstance(generator, torch.Generator) and real_rows is None):
        return StepLoop(plan, forward, step_fn, generator, real_rows, graphs)
    dev = plan.pad_mask.device
    key = (forward, step_fn, plan.method, plan.process, plan.steps,
           tuple(plan.pad_mask.shape), dev, graphs)
    loop = _kept.pop(key, None)
    if loop is None:
        loop = StepLoop(plan, forward, step_fn, torch.Generator(dev), None, graphs)
    _kept[key] = loop
    while len(_kept) > KEPT_LOOPS:
        _kept.popitem(last=False)
    loop.begin(plan, generator)
    return loop
