"""The reverse process: MDLM sampling with random/LLaDA unmasking and ReMDM remasking (spec §5).

One loop for v1 and v2: the forward process (:mod:`bdgen.diffusion.process`) supplies
p_unmask and sigma_max as ``[B, 1]`` (schedule) or ``[B, S]`` (rate network) and the loop
only broadcasts. Node and edge logits are handled as one ``[B, S, 15]`` tensor (edge rows
padded with -inf for the two classes edges do not have), so every step is a handful of
batched tensor ops with no Python loop over samples or positions.

Randomness (one generator per batch chunk, on the sampling device). Each step draws, in
this order and always with the same shapes, whatever the state of the batch:

1. ``random`` unmasking: ``U [B, S]`` float32 (reveal masked l iff ``U_l < p_unmask``);
2. candidates: top-p ``[B, S, 1]`` float32 (inverse-CDF draw from the renormalised
   nucleus, i.e. what ``multinomial`` does), temperature ``[B, S, V]`` float64 Gumbel
   noise (u clamped to [1e-10, 1 - 1e-10]); argmax draws nothing;
3. remasking, only at steps where it fires: ``U [B, S]`` float32.

Because the draws do not depend on which rows are still being decoded, two speed-ups are
exact:

* **early stop**: once no position is masked and no remasking can fire at any remaining
  step, the remaining steps can change nothing (no reveal, no remask; the final clean-up is
  argmax) and are skipped; with a generator per chunk, skipping draws affects no other
  chunk. Without remasking LLaDA finishes a graph of r rooms in r + r(r-1)/2 steps.
* **row compaction** (``compact``, default on CPU): the model is only run on rows whose
  logits are used in this step (a reveal in ``random`` mode, any masked position in
  ``llada``, any candidate for ``confidence`` remasking). The model treats rows
  independently (eval mode, key masking), so this only changes which rows are computed;
  on CPU the per-row results have been found bit-identical to the full batch (tested), on
  CUDA kernel choice may depend on the batch size, so it is off there (and it would need
  a host sync per step). For the same reason the model may be run in micro-batches of
  ``model_batch`` rows (CPU default 128; large batches fall out of cache on CPU).

Room counts come from :func:`draw_num_rooms`, a CPU generator separate from the token
stream (seeded with the run's seed), so for a given seed every method samples the same
room counts. The legacy code had this property by accident (on a GPU the room-count draw
was the only consumer of the CPU random stream, spec §5.2); here it is deliberate: methods
are compared on identical size distributions and rooms W1/KL measure the seed, not the
method.

Determinism: the same seed, batch size and device give the same samples. CPU and CUDA give
different samples (different random streams and float rounding); so do different batch
sizes (draws are batch-shaped).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from bdgen.data.vocab import (
    EDGE_MASK,
    EDGE_PAD,
    EDGE_VOCAB_SIZE,
    NODE_MASK,
    NODE_PAD,
    NODE_VOCAB_SIZE,
    VocabConfig,
)
from bdgen.diffusion.method import Method
from bdgen.diffusion.process import ForwardProcess
from bdgen.diffusion.remasking import RemaskingStrategy, make_strategy
from bdgen.errors import BdgenError
from bdgen.model.precision import autocast

CLEANUP_T = 1e-5          # time of the final clean-up call (spec §5.3)
GUMBEL_U_MIN = 1e-10      # Gumbel noise clamp (spec §3.6)
V = NODE_VOCAB_SIZE       # width of the combined logits
CPU_MODEL_BATCH = 128     # rows per forward on CPU (cache-friendly, see sample_batch)
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
    """``1 + multinomial(distribution, n)`` from a CPU generator seeded with ``seed`` alone.

    Independent of the method and of the token stream, so every method gets the same room
    counts for a seed (see the module docstring).
    """
    p = torch.as_tensor(list(distribution), dtype=torch.float32)
    if p.dim() != 1 or p.numel() < 1 or bool((p < 0).any()) or not float(p.sum()) > 0:
        raise BdgenError(f"num_rooms_distribution must be a non-negative histogram with "
                         f"positive mass, got {list(distribution)}")
    g = torch.Generator().manual_seed(int(seed))
    return 1 + torch.multinomial(p, n, replacement=True, generator=g)


def make_remasker(method: Method) -> RemaskingStrategy | None:
    if method.remasking is None:
        return None
    return make_strategy(method.remasking, method.eta)


class _Tables:
    """Per-position token constants for the ``[nodes | edges]`` layout."""

    def __init__(self, vocab: VocabConfig, device: torch.device) -> None:
        n, e = vocab.n_max, vocab.n_edges
        self.mask_tok = torch.tensor([NODE_MASK] * n + [EDGE_MASK] * e, device=device)
        self.pad_tok = torch.tensor([NODE_PAD] * n + [EDGE_PAD] * e, device=device)
        self.pad_table = torch.from_numpy(vocab.pad_mask_table).to(device)


def _logits(model, x: Tensor, pad_mask: Tensor, t: Tensor | float, precision: str = "fp32"
            ) -> Tensor:
    """``[B, S, V]`` float32 logits; the forward pass runs at the method's ``precision``."""
    with autocast(x.device, precision):
        node, edge = model(x, pad_mask, t)
    edge = torch.nn.functional.pad(edge.float(), (0, V - EDGE_VOCAB_SIZE), value=-torch.inf)
    return torch.cat([node.float(), edge], dim=1)


class _GraphedLogits:
    """:func:`_logits` replayed from a CUDA graph, captured at the first call for each input
    shape and precision.

    Why: the small denoiser's forward is ~60 kernels, and the host needs about as long to
    launch them as the GPU needs to run them; a graph launches them at once, so the host
    stays ahead of the GPU (1-10 % faster for the 100-call methods on an H100,
    docs/BENCHMARKS.md). A replay runs the captured kernels on the new inputs, so its logits
    are bit-identical to the eager forward's (``bench/gpu_smoke.py`` checks the sampled
    tokens). Capture (two warm-up forwards on a side stream, then one captured) is paid
    once per batch. The forward must need no host sync: true of the dense CUDA path
    (grouping real positions is CPU-only).
    """

    def __init__(self, model) -> None:
        self.model = model
        self.graphs: dict[tuple, tuple] = {}

    def __call__(self, x: Tensor, pad_mask: Tensor, t: float, precision: str) -> Tensor:
        key = (tuple(x.shape), precision)
        if key not in self.graphs:
            self.graphs[key] = self._capture(x, pad_mask, precision)
        graph, static_x, static_pad, static_t, out = self.graphs[key]
        static_x.copy_(x)
        static_pad.copy_(pad_mask)
        static_t.fill_(t)
        graph.replay()
        return out.clone()  # the next replay overwrites ``out``

    def _capture(self, x: Tensor, pad_mask: Tensor, precision: str) -> tuple:
        static_x, static_pad = x.clone(), pad_mask.clone()
        static_t = torch.full((), 0.5, dtype=torch.float32, device=x.device)
        side = torch.cuda.Stream(x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):  # warm-up: library handles and workspaces
            for _ in range(2):
                _logits(self.model, static_x, static_pad, static_t, precision)
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = _logits(self.model, static_x, static_pad, static_t, precision)
        return graph, static_x, static_pad, static_t, out


def uniform(generator, shape: Sequence[int], device: torch.device,
            dtype: torch.dtype = torch.float32) -> Tensor:
    """U[0, 1) draws of ``shape``, the sampler's only source of randomness. ``generator``: a
    ``torch.Generator``, or an object with ``rand(shape, device, dtype)`` drawing each block
    of rows from its own stream (several seeds in one batch,
    :class:`bdgen.diffusion.seed_batch.RowStreams`)."""
    if isinstance(generator, torch.Generator):
        return torch.rand(tuple(shape), generator=generator, device=device, dtype=dtype)
    return generator.rand(tuple(shape), device, dtype)


def _cumsum_last(x: Tensor) -> Tensor:
    """``x.cumsum(-1)`` as a scan over the first dim. Why: CUDA scans a short innermost dim
    (15 classes) with a slow parallel scan per row (~10 % of a confidence-remasking step on
    an H100), an outer dim with a fast sequential one per column; sequential sums are what
    the CPU computes either way, so CPU results are unchanged."""
    return x.movedim(-1, 0).cumsum(0).movedim(0, -1)


def _candidates(logits: Tensor, probs: Tensor | None, method: Method,
                generator: torch.Generator) -> Tensor:
    """Step (c): one candidate token per position (top-p > argmax > temperature)."""
    b, s, _ = logits.shape
    if method.top_p is not None:
        sp, si = probs.sort(dim=-1, descending=True)
        cs = _cumsum_last(sp)
        keep = (cs - sp) < method.top_p          # preceding mass >= top_p is dropped
        kept = sp * keep
        kcs = _cumsum_last(kept)
        r = uniform(generator, (b, s, 1), logits.device) * kcs[..., -1:]
        idx = (kcs <= r).sum(-1, keepdim=True)
        last = ((kept > 0).sum(-1, keepdim=True) - 1).clamp_min(0)
        return si.gather(-1, torch.minimum(idx, last)).squeeze(-1)
    if method.temperature == 0.0:
        return logits.argmax(-1)
    u = uniform(generator, logits.shape, logits.device,
                torch.float64).clamp(GUMBEL_U_MIN, 1.0 - GUMBEL_U_MIN)
    g = -torch.log(-torch.log(u))
    return ((logits / method.temperature).to(torch.float64) + g).argmax(-1)


def _llada_reveal(is_mask: Tensor, conf: Tensor, p_unmask: Tensor, last_step: bool) -> Tensor:
    """Step (e), LLaDA: reveal the k most confident masked positions per sample (§5.4)."""
    n_masked = is_mask.sum(-1)
    if last_step:
        k = n_masked
    else:
        if p_unmask.shape[-1] == 1:   # v1: float32 product p * n_masked
            expected = p_unmask[:, 0] * n_masked.to(torch.float32)
        else:                         # v2: float32 sum over masked positions
            expected = (p_unmask * is_mask).sum(-1)
        k = torch.minimum(torch.round(expected).long().clamp_min(1), n_masked)
    conf = torch.where(is_mask, conf, torch.full_like(conf, -torch.inf))
    order = conf.argsort(dim=-1, descending=True, stable=True)
    ranks = torch.arange(conf.shape[-1], device=conf.device).expand_as(order)
    rank = torch.empty_like(order).scatter_(-1, order, ranks)
    return is_mask & (rank < k.unsqueeze(-1))


def remask_steps(method: Method, remasker: RemaskingStrategy | None, steps: int) -> list[int]:
    """Step indices i (N-1 .. 1) at which remasking fires: i > 0 and t_now < t_switch."""
    if remasker is None or not remasker.active:
        return []
    return [i for i in range(steps - 1, 0, -1) if (i + 1) / steps < method.t_switch]


@torch.inference_mode()
def sample_batch(model, process: ForwardProcess, vocab: VocabConfig, num_rooms: Tensor,
                 method: Method, steps: int, generator: torch.Generator, *,
                 early_stop: bool = True, compact: bool | None = None,
                 model_batch: int | None = None, cuda_graphs: bool | None = None,
                 trace: list | None = None) -> tuple[Tensor, int, int]:
    """Sample one batch; returns (tokens int64 [B, S], model calls, rows evaluated).

    ``model_batch``: run the model on at most this many rows at a time (CPU default 128:
    activations of a 1000-row batch fall out of cache; rows are independent, so this only
    changes speed). ``model_calls`` counts sampler steps that called the model.
    ``cuda_graphs`` (CUDA default): replay the whole-batch forward from a CUDA graph
    (:class:`_GraphedLogits`; same logits, less launch overhead).

    ``trace`` (tests/profiling): if given, one dict per executed step is appended with
    ``i``, ``t_now``, ``remask_fired``, ``p_unmask``, ``n_masked_before`` [B], ``revealed``
    [B], ``remasked`` [B] and ``x`` (the tokens after the step).
    """
    if steps < 1:
        raise BdgenError(f"steps must be >= 1, got {steps}")
    device = num_rooms.device
    if compact is None:
        compact = device.type == "cpu"
    if model_batch is None and device.type == "cpu":
        model_batch = CPU_MODEL_BATCH
    tb = _Tables(vocab, device)
    b = num_rooms.shape[0]
    pad_mask = tb.pad_table[num_rooms]
    x = torch.where(pad_mask, tb.mask_tok, tb.pad_tok)
    if cuda_graphs is None:
        cuda_graphs = device.type == "cuda"
    elif cuda_graphs and device.type != "cuda":
        raise BdgenError(f"cuda_graphs needs a CUDA device, the batch is on {device}")
    graphed = _GraphedLogits(model) if cuda_graphs else None
    remasker = make_remasker(method)
    fire = set(remask_steps(method, remasker, steps))
    uses_logits = remasker is not None and remasker.uses_logits
    calls = rows = 0
    pending: list = []  # CUDA: (event, pinned flag) of "anything masked" per step

    def whole_batch(t_val: float) -> Tensor:
        nonlocal calls, rows
        calls, rows = calls + 1, rows + b
        if graphed is not None:
            return graphed(x, pad_mask, t_val, method.precision)
        return _logits(model, x, pad_mask, time_tensor(t_val), method.precision)

    def time_tensor(t_val: float) -> Tensor:
        # 0-d: one time for every row, which the model embeds once (a tensor, not a float,
        # so that a compiled model does not specialise on each step's value)
        return torch.full((), t_val, dtype=torch.float32, device=device)

    def run_model(needed: Tensor | None, t_val: float) -> Tensor:
        nonlocal calls, rows
        if needed is None and (model_batch is None or model_batch >= b):
            return whole_batch(t_val)
        idx = (needed.nonzero().squeeze(1) if needed is not None
               else torch.arange(b, device=device))
        if idx.numel() == b and (model_batch is None or model_batch >= b):
            return whole_batch(t_val)  # every row needed: no gather/scatter
        t = time_tensor(t_val)
        out = torch.zeros((b, x.shape[1], V), device=device)
        if idx.numel():
            calls, rows = calls + 1, rows + idx.numel()
            for part in idx.split(model_batch or idx.numel()):
                out[part] = _logits(model, x[part], pad_mask[part], t, method.precision)
        return out

    # Early stop only where remasking can never fire: then "nothing masked" is final.
    stoppable = early_stop and not fire
    for i in range(steps - 1, -1, -1):
        if stoppable:
            if device.type == "cuda":
                # Look only at flags of steps the GPU has finished (no host sync).
                done = False
                while pending and pending[0][0].query():
                    done = not bool(pending.pop(0)[1])
                    if done:
                        break
                if done:
                    break
            elif not bool((x == tb.mask_tok).any()):
                break
        t_now, t_next = (i + 1) / steps, i / steps
        fires = i in fire
        t_now32 = torch.full((b,), t_now, dtype=torch.float32, device=device)
        t_next64 = torch.full((b,), t_next, dtype=torch.float64, device=device)
        is_mask = x == tb.mask_tok
        p = process.p_unmask(t_now32, t_next64, pad_mask)

        # (e, random) drawn first so that compaction knows which rows reveal something
        if method.unmasking == "random":
            u = uniform(generator, (b, x.shape[1]), device)
            reveal = is_mask & (u < p)
            needed = reveal.any(-1)
        else:
            needed = is_mask.any(-1)
        if fires and uses_logits:  # confidence needs every row's probabilities
            needed = torch.ones_like(needed)
        logits = run_model(needed if compact else None, t_now)     # (a)
        probs = torch.softmax(logits, dim=-1) if (
            method.top_p is not None or method.unmasking == "llada" or uses_logits) else None
        cand = _candidates(logits, probs, method, generator)      # (c)
        if method.unmasking == "llada":                           # (e, llada)
            conf = probs.gather(-1, cand.unsqueeze(-1)).squeeze(-1)
            reveal = _llada_reveal(is_mask, conf, p, last_step=(i == 0))
        x = torch.where(reveal, cand, x)                          # (f) carry-over
        x = torch.where(pad_mask, x, tb.pad_tok)                  # (g) PAD re-clamp
        remasked = None
        if fires:                                                 # (i)
            t_now64 = torch.full((b,), t_now, dtype=torch.float64, device=device)
            sigma_max = process.sigma_max(t_now64, t_next64, pad_mask)
            candidates = (x != tb.mask_tok) & pad_mask
            tok_p = probs.gather(-1, x.unsqueeze(-1)).squeeze(-1) if uses_logits else None
            sig = remasker.probabilities(sigma_max, candidates, tok_p)
            u = uniform(generator, (b, x.shape[1]), device)
            remasked = candidates & (u < sig)
            x = torch.where(remasked, tb.mask_tok, x)
        if trace is not None:
            trace.append({"i": i, "t_now": t_now, "remask_fired": fires, "x": x.cpu(),
                          "n_masked_before": is_mask.sum(-1).cpu(), "p_unmask": p.cpu(),
                          "revealed": reveal.sum(-1).cpu(),
                          "remasked": (remasked.sum(-1).cpu() if remasked is not None
                                       else torch.zeros(b, dtype=torch.long))})
        if stoppable and device.type == "cuda":
            flag = torch.empty((), dtype=torch.bool, pin_memory=True)
            flag.copy_((x == tb.mask_tok).any(), non_blocking=True)
            ev = torch.cuda.Event()
            ev.record()
            pending.append((ev, flag))

    # Final clean-up (safety net): argmax at t = 1e-5 for any MASK left.
    left = (x == tb.mask_tok) & pad_mask
    if bool(left.any()):
        logits = run_model(left.any(-1) if compact else None, CLEANUP_T)
        x = torch.where(left, logits.argmax(-1), x)
        x = torch.where(pad_mask, x, tb.pad_tok)
    return x, calls, rows


@contextmanager
def _chunk_runner(workers: int) -> Iterator:
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


def sample(model, process: ForwardProcess, vocab: VocabConfig, num_rooms: Tensor,
           method: Method, steps: int, seed: int, device: torch.device | str = "cpu",
           batch_size: int | None = None, early_stop: bool = True,
           compact: bool | None = None, model_batch: int | None = None,
           progress=None, workers: int | None = None,
           cuda_graphs: bool | None = None) -> SampleOutput:
    """Sample ``len(num_rooms)`` graphs in chunks of ``batch_size`` (default: all at once on
    CUDA, 128 on CPU, where per-step tensors of 1000 rows fall out of cache).

    Chunk c uses its own generator on ``device`` seeded with ``derive_seed(seed, "tokens",
    c)``, so chunks are independent and early stop in one chunk cannot shift another's
    draws. ``progress(n_done)`` is called after each chunk, in chunk order.

    ``workers`` (CPU): chunks sampled concurrently, each on one thread with one intra-op
    thread, instead of one chunk at a time on all of torch's threads. Why: the step's many
    small ops barely use a second intra-op thread, so one chunk per core is ~1.6x the
    throughput on the 2-core machine. Default: torch's thread count (capped by the number
    of chunks); 1 = one chunk at a time. The tokens are the same either way (tested): a
    chunk's result depends only on its generator, and the kernels give the same rows with
    one intra-op thread as with several.

    ``cuda_graphs`` (CUDA, default on): the model's forward is replayed from a CUDA graph;
    pass False for a model that cannot be captured (e.g. one already compiled with CUDA
    graphs of its own).
    """
    device = torch.device(device)
    n = int(num_rooms.shape[0])
    if n < 1:
        raise BdgenError(f"num_samples must be >= 1, got {n}")
    if int(num_rooms.min()) < 1 or int(num_rooms.max()) > vocab.n_max:
        raise BdgenError(f"num_rooms must lie in [1, {vocab.n_max}]")
    if batch_size is None:  # CPU: cache-sized chunks are faster per sample; CUDA: all at once
        batch_size = min(n, CPU_BATCH) if device.type == "cpu" else n
    bs = int(batch_size)
    if bs < 1:
        raise BdgenError(f"batch_size must be >= 1, got {batch_size}")
    starts = list(range(0, n, bs))

    def chunk(c: int) -> tuple[Tensor, int, int]:
        g = torch.Generator(device=device).manual_seed(derive_seed(seed, "tokens", c))
        rooms = num_rooms[starts[c]:starts[c] + bs].to(device)
        x, k, r = sample_batch(model, process, vocab, rooms, method, steps, g,
                               early_stop=early_stop, compact=compact,
                               model_batch=model_batch, cuda_graphs=cuda_graphs)
        return x.cpu(), k, r

    if workers is None:
        workers = torch.get_num_threads() if device.type == "cpu" else 1
    workers = max(1, min(int(workers), len(starts))) if device.type == "cpu" else 1
    out, calls, rows = [], 0, 0
    with _chunk_runner(workers) as run_chunks:
        for c, (x, k, r) in enumerate(run_chunks(chunk, range(len(starts)))):
            out.append(x)
            calls, rows = calls + k, rows + r
            if progress is not None:
                progress(min(starts[c] + bs, n))
    tokens = torch.cat(out)
    pad_mask = torch.from_numpy(vocab.pad_mask_table)[num_rooms.cpu()]
    return SampleOutput(tokens, pad_mask, num_rooms.cpu().long(), calls, rows)
