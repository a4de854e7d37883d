"""The fast sampler: the reference loop of :mod:`bdgen.diffusion.sampler` with exact
speed-ups, same interface plus switches, same tokens on CPU (tests/test_fast_sampling.py).

Every step draws its random numbers in a fixed order with batch-shaped sizes whatever the
state of the batch (:mod:`bdgen.diffusion.reverse`), which is what makes these exact:

* **early stop**: once no position is masked and no remasking can fire at any remaining
  step, the remaining steps can change nothing (no reveal, no remask; the clean-up is
  argmax) and are skipped; with a generator per chunk, skipping draws affects no other
  chunk. Without remasking LLaDA finishes a graph of r rooms in r + r(r-1)/2 steps. On
  CUDA the "anything masked" flag of each step is copied to pinned memory and read once
  the GPU has finished that step, so the loop never waits for the GPU.
* **row compaction** (``compact``, default on CPU): the model runs only on the rows whose
  logits the step uses (:func:`bdgen.diffusion.reverse.rows_needed`). Rows are independent
  (eval mode, PAD keys masked) and on CPU the per-row results are bit-identical to the full
  batch; on CUDA kernel choice may depend on the batch size (and selecting rows needs a
  host sync), so it is off there. For the same reason the model may run in micro-batches
  of ``model_batch`` rows (CPU default 128; large batches fall out of cache on CPU).
* **CUDA graphs** (CUDA default): the whole-batch forward is replayed from a graph.
* **concurrent chunks** (CPU): chunks sampled on a thread pool, one intra-op thread each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from bdgen.data.vocab import VocabConfig
from bdgen.diffusion.method import Method
from bdgen.diffusion.process import ForwardProcess
from bdgen.diffusion.reverse import Plan, V, clean_up, reverse_step
from bdgen.diffusion.sampler import (
    SampleOutput,
    check_request,
    chunk_generator,
    chunk_starts,
    model_logits,
    step_time,
    trace_entry,
)
from bdgen.errors import BdgenError

CPU_MODEL_BATCH = 128     # rows per forward on CPU (cache-friendly)


class GraphedLogits:
    """:func:`bdgen.diffusion.sampler.model_logits` replayed from a CUDA graph, captured at
    the first call for each input shape and precision.

    Why: the small denoiser's forward is ~60 kernels, and the host needs about as long to
    launch them as the GPU needs to run them; a graph launches them at once, so the host
    stays ahead of the GPU (1-10 % faster for the 100-call methods on an H100,
    docs/BENCHMARKS.md). A replay runs the captured kernels on the new inputs, so its logits
    are bit-identical to the eager forward's (``bench/gpu_smoke.py`` checks the sampled
    tokens). Capture (two warm-up forwards on a side stream, then one captured) is paid
    once per batch. The forward must need no host sync: true of the dense CUDA path.
    """

    def __init__(self, model: nn.Module, real_rows: Tensor | None = None) -> None:
        self.model, self.real_rows = model, real_rows  # rows: fixed for the graphs' life
        self.graphs: dict[tuple[Any, ...], tuple[Any, ...]] = {}

    def __call__(self, x: Tensor, pad_mask: Tensor, t: float, precision: str) -> Tensor:
        key = (tuple(x.shape), precision)
        if key not in self.graphs:
            self.graphs[key] = self._capture(x, pad_mask, precision)
        graph, static_x, static_pad, static_t, out = self.graphs[key]
        static_x.copy_(x)
        static_pad.copy_(pad_mask)
        static_t.fill_(t)
        graph.replay()
        result: Tensor = out.clone()  # the next replay overwrites ``out``
        return result

    def _capture(self, x: Tensor, pad_mask: Tensor, precision: str) -> tuple[Any, ...]:
        static_x, static_pad = x.clone(), pad_mask.clone()
        static_t = torch.full((), 0.5, dtype=torch.float32, device=x.device)
        with on_side_stream(torch.cuda.Stream(x.device)):  # warm-up: handles, workspaces
            for _ in range(2):
                model_logits(self.model, static_x, static_pad, static_t, precision,
                             self.real_rows)
        graph = torch.cuda.CUDAGraph()
        with own_cublas_workspace(), torch.cuda.graph(graph):
            out = model_logits(self.model, static_x, static_pad, static_t, precision,
                               self.real_rows)
        return graph, static_x, static_pad, static_t, out


@contextmanager
def on_side_stream(side: torch.cuda.Stream) -> Iterator[None]:
    """Work queued on ``side``, after what the current stream has queued so far and before
    what it queues next."""
    main = torch.cuda.current_stream(side.device)
    side.wait_stream(main)
    try:
        with torch.cuda.stream(side):
            yield
    finally:
        main.wait_stream(side)


@contextmanager
def own_cublas_workspace() -> Iterator[None]:
    """A capture whose matrix products get a cuBLAS workspace of the graph's own.

    Why: cuBLAS keeps one workspace per stream, and a captured product uses whichever
    that stream has then. If it was allocated inside another graph's capture, it lives in
    that graph's memory pool and is freed with that graph, while the stream's entry still
    points at it (torch's pool of streams hands the same streams out again): a graph
    captured with it would write into memory that others own. Clearing the workspaces
    before the capture makes the capture allocate one in its own pool; clearing them after
    keeps later work off it. Inductor's CUDA-graph trees do the same."""
    torch._C._cuda_clearCublasWorkspaces()
    try:
        yield
    finally:
        torch._C._cuda_clearCublasWorkspaces()


class CompactLogits:
    """A ``logits_fn`` with row hints: the model on the needed rows only (others zero), in
    micro-batches of ``model_batch`` rows, or the whole batch (optionally a CUDA graph)."""

    def __init__(self, model: nn.Module, pad_mask: Tensor, precision: str,
                 model_batch: int | None, graphed: GraphedLogits | None,
                 real_rows: Tensor | None = None) -> None:
        self.model, self.pad_mask, self.precision = model, pad_mask, precision
        self.model_batch, self.graphed = model_batch, graphed
        self.real_rows = real_rows  # whole-batch calls skip PAD rows with them (model_logits)
        self.calls = self.rows = 0

    def _whole(self, x: Tensor, t: float) -> Tensor:
        self.calls, self.rows = self.calls + 1, self.rows + x.shape[0]
        if self.graphed is not None:
            return self.graphed(x, self.pad_mask, t, self.precision)
        return model_logits(self.model, x, self.pad_mask, step_time(t, x.device),
                            self.precision, self.real_rows)

    def __call__(self, x: Tensor, t: float, needed: Tensor | None = None) -> Tensor:
        b, mb = x.shape[0], self.model_batch
        fits = mb is None or mb >= b
        if needed is None and fits:
            return self._whole(x, t)
        idx = needed.nonzero().squeeze(1) if needed is not None else torch.arange(
            b, device=x.device)
        if idx.numel() == b and fits:
            return self._whole(x, t)  # every row needed: no gather/scatter
        out = torch.zeros((b, x.shape[1], V), device=x.device)
        if idx.numel():
            self.calls, self.rows = self.calls + 1, self.rows + idx.numel()
            tt = step_time(t, x.device)
            for part in idx.split(mb or idx.numel()):
                out[part] = model_logits(self.model, x[part], self.pad_mask[part], tt,
                                         self.precision)
        return out


class _CudaDoneFlags:
    """"Nothing masked" flags of finished CUDA steps, read without a host sync."""

    def __init__(self) -> None:
        self.pending: list[tuple[Any, Tensor]] = []

    def record(self, x: Tensor, mask_tok: Tensor) -> None:
        flag = torch.empty((), dtype=torch.bool, pin_memory=True)
        flag.copy_((x == mask_tok).any(), non_blocking=True)
        ev = torch.cuda.Event()
        ev.record()
        self.pending.append((ev, flag))

    def done(self) -> bool:
        while self.pending and self.pending[0][0].query():
            if not bool(self.pending.pop(0)[1]):
                return True
        return False


class EarlyStop:
    """The early stop of a sampling loop (module docstring): with no remasking step left to
    fire, a batch with nothing masked is final. :meth:`done` before each step, :meth:`record`
    after it; on CUDA the check reads flags of finished steps, so the loop never waits."""

    def __init__(self, plan: Plan, enabled: bool) -> None:
        self.enabled = enabled and not plan.fire  # then "nothing masked" is final
        self.mask_tok = plan.mask_tok
        self.flags = (_CudaDoneFlags() if self.enabled and plan.pad_mask.device.type == "cuda"
                      else None)

    def done(self, x: Tensor) -> bool:
        if not self.enabled:
            return False
        if self.flags is not None:
            return self.flags.done()
        return not bool((x == self.mask_tok).any())

    def record(self, x: Tensor) -> None:
        if self.flags is not None:
            self.flags.record(x, self.mask_tok)


@torch.inference_mode()
def sample_batch(model: nn.Module, process: ForwardProcess, vocab: VocabConfig,
                 num_rooms: Tensor, method: Method, steps: int, generator: torch.Generator,
                 *, early_stop: bool = True, compact: bool | None = None,
                 model_batch: int | None = None, cuda_graphs: bool | None = None,
                 trace: list[dict[str, Any]] | None = None) -> tuple[Tensor, int, int]:
    """:func:`bdgen.diffusion.sampler.sample_batch` with the speed-ups (module docstring);
    ``model_calls`` counts the steps that called the model.

    ``compact`` (CPU default), ``model_batch`` (CPU default 128), ``cuda_graphs`` (CUDA
    default): see the module docstring; with ``early_stop=False, compact=False,
    cuda_graphs=False`` and no ``model_batch`` this is the reference loop. A ``_compiled``
    method on CUDA runs :func:`bdgen.diffusion.compiled_sampling.sample_batch_compiled`
    (no ``trace``); on CPU it runs this loop.
    """
    if steps < 1:
        raise BdgenError(f"steps must be >= 1, got {steps}")
    device = num_rooms.device
    compact, model_batch, cuda_graphs = loop_defaults(device, compact, model_batch,
                                                      cuda_graphs)
    if method.kernels == "compiled" and device.type == "cuda":
        if trace is not None:
            raise BdgenError(f"{method} on CUDA records no trace; trace its eager twin")
        # imported here: that loop builds on this module's logits functions
        from bdgen.diffusion.compiled_sampling import sample_batch_compiled
        return sample_batch_compiled(model, process, vocab, num_rooms, method, steps,
                                     generator, early_stop=early_stop,
                                     cuda_graphs=cuda_graphs)
    plan = Plan.build(method, process, vocab, num_rooms, steps)
    logits_fn = CompactLogits(model, plan.pad_mask, method.precision, model_batch,
                              GraphedLogits(model) if cuda_graphs else None)
    stop = EarlyStop(plan, early_stop)
    x = plan.initial()
    for i in range(steps - 1, -1, -1):
        if stop.done(x):
            break
        x, info = reverse_step(plan, x, i, logits_fn, generator, row_hints=compact)
        if trace is not None:
            trace.append(trace_entry(i, plan, x, info))
        stop.record(x)
    x = clean_up(plan, x, logits_fn, row_hints=compact)
    return x, logits_fn.calls, logits_fn.rows


@contextmanager
def chunk_runner(workers: int) -> Iterator[Callable[..., Iterator[Any]]]:
    """``map``-like runner of chunks: in order on this thread (``workers == 1``), or on a
    pool of ``workers`` threads with torch's intra-op threads set to 1 meanwhile (torch ops
    release the GIL, so the chunks run in parallel); results are yielded in chunk order."""
    if workers == 1:
        yield map
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bdgen-sample") as ex:
            yield ex.map
    finally:
        torch.set_num_threads(before)



def loop_defaults(device: torch.device, compact: bool | None, model_batch: int | None,
                  cuda_graphs: bool | None) -> tuple[bool, int | None, bool]:
    """The speed-ups' per-device defaults (compaction and 128-row micro-batches on the CPU,
    CUDA graphs on CUDA), shared by the unguided and the guided loop."""
    compact = device.type == "cpu" if compact is None else compact
    if model_batch is None and device.type == "cpu":
        model_batch = CPU_MODEL_BATCH
    if cuda_graphs is None:
        cuda_graphs = device.type == "cuda"
    elif cuda_graphs and device.type != "cuda":
        raise BdgenError(f"cuda_graphs needs a CUDA device, the batch is on {device}")
    return compact, model_batch, cuda_graphs

def sample(model: nn.Module, process: ForwardProcess, vocab: VocabConfig, num_rooms: Tensor,
           method: Method, steps: int, seed: int, device: torch.device | str = "cpu",
           batch_size: int | None = None, early_stop: bool = True,
           compact: bool | None = None, model_batch: int | None = None,
           progress: Callable[[int], None] | None = None, workers: int | None = None,
           cuda_graphs: bool | None = None) -> SampleOutput:
    """:func:`bdgen.diffusion.sampler.sample` with the speed-ups; same chunks, generators
    and tokens.

    ``workers`` (CPU): chunks sampled concurrently, each on one thread with one intra-op
    thread. Why: the step's many small ops barely use a second intra-op thread, so one chunk
    per core is ~1.6x the throughput on a 2-core machine. Default: torch's thread count
    (capped by the number of chunks); 1 = one chunk at a time. The tokens are the same
    either way (tested): a chunk's result depends only on its generator, and the kernels
    give the same rows with one intra-op thread as with several.

    ``cuda_graphs`` (CUDA, default on): pass False for a model that cannot be captured
    (e.g. one already compiled with CUDA graphs of its own).
    """
    device = torch.device(device)
    check_request(vocab, num_rooms, steps)
    n = int(num_rooms.shape[0])
    starts, bs = chunk_starts(n, batch_size, device)

    def chunk(c: int) -> tuple[Tensor, int, int]:
        rooms = num_rooms[starts[c]:starts[c] + bs].to(device)
        x, k, r = sample_batch(model, process, vocab, rooms, method, steps,
                               chunk_generator(seed, c, device), early_stop=early_stop,
                               compact=compact, model_batch=model_batch,
                               cuda_graphs=cuda_graphs)
        return x.cpu(), k, r

    if workers is None:
        workers = torch.get_num_threads() if device.type == "cpu" else 1
    workers = max(1, min(int(workers), len(starts))) if device.type == "cpu" else 1
    out, calls, rows = [], 0, 0
    with chunk_runner(workers) as run_chunks:
        for c, (x, k, r) in enumerate(run_chunks(chunk, range(len(starts)))):
            out.append(x)
            calls, rows = calls + k, rows + r
            if progress is not None:
                progress(min(starts[c] + bs, n))
    pad_mask = torch.from_numpy(vocab.pad_mask_table)[num_rooms.cpu()]
    return SampleOutput(torch.cat(out), pad_mask, num_rooms.cpu().long(), calls, rows)
