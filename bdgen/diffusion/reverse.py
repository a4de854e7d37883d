"""One step of the reverse process: MDLM unmasking with ReMDM remasking (spec §5.3-5.6).

Read :func:`reverse_step` top to bottom: (1) reveal coins, (2) one model call, (3) one
candidate token per position, (4) reveal (random coins or LLaDA's most confident), carry
over, PAD clamp, (5) remask (ReMDM, only at the steps where it fires). :func:`clean_up` is
the final safety net. The model enters only through ``logits_fn``; the forward process
only through ``p_unmask``/``sigma_max`` (:mod:`bdgen.diffusion.process`), ``[B, 1]``
(fixed schedule) or ``[B, S]`` (learned rates), which the step only broadcasts.

Stable API (the guided sampler builds on it):

* ``logits_fn(tokens [B, S], t: float) -> logits [B, S, V]`` float32, node and edge rows
  in one tensor (edge rows padded with -inf to V = 15 classes). With ``row_hints=True`` the
  step calls ``logits_fn(tokens, t, rows)`` with ``rows`` bool ``[B]``: the rows whose
  logits this step uses (the fast sampler computes only those; other rows may be anything
  finite).
* :class:`Plan` - what stays fixed over a batch: method, forward process, remasker, the
  steps at which remasking fires, PAD mask and per-position MASK/PAD tokens.
* :func:`draw_candidates` - step (3): one token per position for any leading shape, so
  ``logits.expand(K, B, S, V)`` draws K candidates per position from one model call.
* :func:`propose` - steps (1), (3), (4) on given logits: the unmask transition without
  remasking, for a ``[B]`` or a tiled ``[K*B]`` batch.
* :func:`remask` - step (5) with optional ``protect`` (positions that cannot be
  remasked this step) and ``boost`` (added to the confidence strategy's token
  probabilities).
* :func:`reverse_step`, :func:`clean_up` - the whole step and the clean-up.
* the same steps given their draws, with no randomness of their own: :func:`coins_from`,
  :func:`pick_candidates`, :func:`transition` (steps 3-4), :func:`remask_with`; the draws
  are :func:`uniform`, :func:`candidate_draw` and :func:`remask_budget`'s budget. The
  functions above are built from these; the compiled loop
  (:mod:`bdgen.diffusion.compiled_sampling`) compiles them.

Random draws, in this order and always with the same shapes whatever the batch state
(what makes early stop and row compaction exact, :mod:`bdgen.diffusion.fast_sampling`):
``random`` coins ``U [B, S]`` float32; candidates: top-p ``[B, S, 1]`` float32 (inverse CDF
of the renormalised nucleus), temperature ``[B, S, V]`` float64 Gumbel noise (u clamped to
[1e-10, 1 - 1e-10]), argmax nothing; remasking, only where it fires, ``U [B, S]`` float32.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from bdgen.data.vocab import EDGE_MASK, EDGE_PAD, NODE_MASK, NODE_PAD, NODE_VOCAB_SIZE, VocabConfig
from bdgen.diffusion.method import Method
from bdgen.diffusion.process import ForwardProcess
from bdgen.diffusion.remasking import RemaskingStrategy, make_strategy

CLEANUP_T = 1e-5          # time of the final clean-up call (spec §5.3)
GUMBEL_U_MIN = 1e-10      # Gumbel noise clamp (spec §3.6)
V = NODE_VOCAB_SIZE       # width of the combined logits

LogitsFn = Callable[..., Tensor]


def make_remasker(method: Method) -> RemaskingStrategy | None:
    return None if method.remasking is None else make_strategy(method.remasking, method.eta)


def remask_steps(method: Method, remasker: RemaskingStrategy | None, steps: int) -> list[int]:
    """Step indices i (N-1 .. 1) at which remasking fires: i > 0 and t_now < t_switch."""
    if remasker is None or not remasker.active:
        return []
    t_switch = 1.0 if method.t_switch is None else method.t_switch
    return [i for i in range(steps - 1, 0, -1) if (i + 1) / steps < t_switch]


@dataclass
class Plan:
    """What stays fixed while one batch is sampled."""

    method: Method
    process: ForwardProcess
    steps: int
    pad_mask: Tensor                 # bool [B, S], True = real position
    mask_tok: Tensor                 # int64 [S], the MASK token of each position
    pad_tok: Tensor                  # int64 [S], the PAD token of each position
    remasker: RemaskingStrategy | None = None
    fire: frozenset[int] = field(default_factory=frozenset)

    @classmethod
    def build(cls, method: Method, process: ForwardProcess, vocab: VocabConfig,
              num_rooms: Tensor, steps: int) -> Plan:
        device = num_rooms.device
        n, e = vocab.n_max, vocab.n_edges
        remasker = make_remasker(method)
        return cls(method, process, steps,
                   torch.from_numpy(vocab.pad_mask_table).to(device)[num_rooms],
                   torch.tensor([NODE_MASK] * n + [EDGE_MASK] * e, device=device),
                   torch.tensor([NODE_PAD] * n + [EDGE_PAD] * e, device=device),
                   remasker, frozenset(remask_steps(method, remasker, steps)))

    def initial(self) -> Tensor:
        """Every real position masked, every other one PAD."""
        return torch.where(self.pad_mask, self.mask_tok, self.pad_tok)

    @property
    def needs_probs(self) -> bool:
        m = self.method
        return (m.top_p is not None or m.unmasking == "llada"
                or (self.remasker is not None and self.remasker.uses_logits))

    def times(self, i: int) -> tuple[float, float]:
        return (i + 1) / self.steps, i / self.steps

    def p_unmask(self, i: int, pad_mask: Tensor) -> Tensor:
        """float32 ``[B, 1]`` or ``[B, S]``; t_now float32, t_next float64 (spec §3.6)."""
        t_now, t_next = self.times(i)
        b, dev = pad_mask.shape[0], pad_mask.device
        return self.process.p_unmask(torch.full((b,), t_now, dtype=torch.float32, device=dev),
                                     torch.full((b,), t_next, dtype=torch.float64, device=dev),
                                     pad_mask)


def _cumsum_last(x: Tensor) -> Tensor:
    """``x.cumsum(-1)`` as a scan over the first dim. Why: CUDA scans a short innermost dim
    (15 classes) with a slow parallel scan per row (~10 % of a confidence-remasking step on
    an H100), an outer dim with a fast sequential one per column; sequential sums are what
    the CPU computes either way, so CPU results are unchanged."""
    return x.movedim(-1, 0).cumsum(0).movedim(0, -1)


def uniform(generator: torch.Generator, shape: Sequence[int], device: torch.device,
            dtype: torch.dtype = torch.float32) -> Tensor:
    """U[0, 1) draws of ``shape``, the reverse step's only source of randomness.
    ``generator``: a ``torch.Generator``, or an object with ``rand(shape, device, dtype)``
    that draws each block of rows from its own stream (several seeds in one batch,
    :class:`bdgen.diffusion.seed_batch.RowStreams`, passed where a generator goes)."""
    if isinstance(generator, torch.Generator):
        return torch.rand(tuple(shape), generator=generator, device=device, dtype=dtype)
    return generator.rand(tuple(shape), device, dtype)  # type: ignore[unreachable]


def candidate_draw(logits: Tensor, method: Method, generator: torch.Generator
                   ) -> Tensor | None:
    """The random numbers step (3) uses for ``logits [..., S, V]``: top-p ``[..., S, 1]``
    float32, temperature ``[..., S, V]`` float64, argmax none."""
    if method.top_p is not None:
        return uniform(generator, (*logits.shape[:-1], 1), logits.device)
    if method.temperature == 0.0:
        return None
    return uniform(generator, logits.shape, logits.device, torch.float64)


def pick_candidates(logits: Tensor, method: Method, u: Tensor | None,
                    probs: Tensor | None = None) -> Tensor:
    """Step (3) given its draw ``u`` (:func:`candidate_draw`); no randomness of its own."""
    if method.top_p is not None:
        assert u is not None, "top-p sampling needs its uniform draw"
        if probs is None:
            probs = torch.softmax(logits, dim=-1)
        sp, si = probs.sort(dim=-1, descending=True)
        cs = _cumsum_last(sp)
        kept = sp * ((cs - sp) < method.top_p)    # preceding mass >= top_p is dropped
        kcs = _cumsum_last(kept)
        r = u * kcs[..., -1:]
        idx = (kcs <= r).sum(-1, keepdim=True)
        last = ((kept > 0).sum(-1, keepdim=True) - 1).clamp_min(0)
        return si.gather(-1, torch.minimum(idx, last)).squeeze(-1)
    if method.temperature == 0.0:
        return logits.argmax(-1)
    assert u is not None, "temperature sampling needs its uniform draw"
    g = -torch.log(-torch.log(u.clamp(GUMBEL_U_MIN, 1.0 - GUMBEL_U_MIN)))
    return ((logits / method.temperature).to(torch.float64) + g).argmax(-1)


def draw_candidates(logits: Tensor, method: Method, generator: torch.Generator,
                    probs: Tensor | None = None) -> Tensor:
    """Step (3): one token per position of ``logits [..., S, V]`` (top-p > argmax >
    temperature); ``probs`` = ``softmax(logits)`` if already computed."""
    return pick_candidates(logits, method, candidate_draw(logits, method, generator), probs)


def llada_reveal(is_mask: Tensor, conf: Tensor, p_unmask: Tensor, last_step: bool) -> Tensor:
    """LLaDA: reveal the k most confident masked positions per sample (spec §5.4)."""
    n_masked = is_mask.sum(-1)
    if last_step:
        k = n_masked
    else:
        if p_unmask.shape[-1] == 1:   # fixed schedule: float32 product p * n_masked
            expected = p_unmask[:, 0] * n_masked.to(torch.float32)
        else:                         # learned rates: float32 sum over masked positions
            expected = (p_unmask * is_mask).sum(-1)
        k = torch.minimum(torch.round(expected).long().clamp_min(1), n_masked)
    conf = torch.where(is_mask, conf, torch.full_like(conf, -torch.inf))
    order = conf.argsort(dim=-1, descending=True, stable=True)
    ranks = torch.arange(conf.shape[-1], device=conf.device).expand_as(order)
    rank = torch.empty_like(order).scatter_(-1, order, ranks)
    return is_mask & (rank < k.unsqueeze(-1))


def draw_coins(plan: Plan, x: Tensor, p_unmask: Tensor, generator: torch.Generator
               ) -> Tensor | None:
    """Step (1), ``random`` unmasking only: reveal masked l iff ``U_l < p_unmask``."""
    if plan.method.unmasking != "random":
        return None
    return coins_from(plan, x, p_unmask, uniform(generator, x.shape, x.device))


def coins_from(plan: Plan, x: Tensor, p_unmask: Tensor, u: Tensor) -> Tensor:
    """Step (1) given its draw ``u [B, S]``."""
    return (x == plan.mask_tok) & (u < p_unmask)


@dataclass
class Proposal:
    x: Tensor                # tokens after reveal, carry-over and PAD clamp
    reveal: Tensor           # bool [B, S], positions revealed this step
    probs: Tensor | None     # softmax(logits) where the method needs it


def propose(plan: Plan, x: Tensor, logits: Tensor, i: int, generator: torch.Generator,
            pad_mask: Tensor | None = None, p: Tensor | None = None,
            coins: Tensor | None = None) -> Proposal:
    """Steps (1), (3), (4): the unmask transition of ``x`` at step i (no remasking).

    ``pad_mask`` defaults to the plan's (pass it tiled for a ``[K*B]`` batch); ``p``: this
    step's ``plan.p_unmask`` if already computed; ``coins``: the ``random`` reveal already
    drawn with :func:`draw_coins` (else drawn here first).
    """
    pad_mask = plan.pad_mask if pad_mask is None else pad_mask
    if p is None:
        p = plan.p_unmask(i, pad_mask)
    if coins is None:
        coins = draw_coins(plan, x, p, generator)
    return transition(plan, x, logits, p, i == 0, coins,
                      candidate_draw(logits, plan.method, generator), pad_mask)


def transition(plan: Plan, x: Tensor, logits: Tensor, p: Tensor, last_step: bool,
               coins: Tensor | None, u: Tensor | None, pad_mask: Tensor | None = None
               ) -> Proposal:
    """Steps (3), (4) given the step's draws (``coins``, the candidates' ``u``): what
    :func:`propose` computes, with no randomness of its own."""
    pad_mask = plan.pad_mask if pad_mask is None else pad_mask
    probs = torch.softmax(logits, dim=-1) if plan.needs_probs else None
    cand = pick_candidates(logits, plan.method, u, probs)
    if coins is None:          # llada: the most confident candidates
        assert probs is not None
        conf = probs.gather(-1, cand.unsqueeze(-1)).squeeze(-1)
        reveal = llada_reveal(x == plan.mask_tok, conf, p, last_step)
    else:
        reveal = coins
    x = torch.where(reveal, cand, x)                # carry-over
    return Proposal(torch.where(pad_mask, x, plan.pad_tok), reveal, probs)


def remask_budget(plan: Plan, i: int) -> Tensor:
    """Step (5)'s ``sigma_max`` at step i (float32 ``[B, 1]`` or ``[B, S]``)."""
    t_now, t_next = plan.times(i)
    b, dev = plan.pad_mask.shape[0], plan.pad_mask.device
    return plan.process.sigma_max(torch.full((b,), t_now, dtype=torch.float64, device=dev),
                                  torch.full((b,), t_next, dtype=torch.float64, device=dev),
                                  plan.pad_mask)


def remask(plan: Plan, x: Tensor, probs: Tensor | None, i: int, generator: torch.Generator,
           protect: Tensor | None = None, boost: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Step (5), ReMDM: re-mask decoded positions with the strategy's probabilities;
    returns (tokens, remasked). Call only when ``i in plan.fire``."""
    sigma_max = remask_budget(plan, i)
    return remask_with(plan, x, probs, sigma_max, uniform(generator, x.shape, x.device),
                       protect, boost)


def remask_with(plan: Plan, x: Tensor, probs: Tensor | None, sigma_max: Tensor, u: Tensor,
                protect: Tensor | None = None, boost: Tensor | None = None
                ) -> tuple[Tensor, Tensor]:
    """Step (5) given its budget and its draw ``u [B, S]``: what :func:`remask` computes,
    with no randomness of its own."""
    assert plan.remasker is not None, "remask() called at a step where remasking cannot fire"
    candidates = (x != plan.mask_tok) & plan.pad_mask
    if protect is not None:
        candidates = candidates & ~protect
    tok_p = None
    if plan.remasker.uses_logits:
        assert probs is not None, "a logits-based remasker needs this step's probabilities"
        tok_p = probs.gather(-1, x.unsqueeze(-1)).squeeze(-1)
        if boost is not None:
            tok_p = tok_p + boost
    sig = plan.remasker.probabilities(sigma_max, candidates, tok_p)
    remasked = candidates & (u < sig)
    return torch.where(remasked, plan.mask_tok, x), remasked


@dataclass
class StepInfo:
    """What a step did (for traces and tests)."""

    is_mask: Tensor
    p_unmask: Tensor
    reveal: Tensor
    remasked: Tensor | None


def rows_needed(plan: Plan, x: Tensor, coins: Tensor | None, i: int) -> Tensor:
    """bool ``[B]``: rows whose logits step i uses (a reveal in ``random`` mode, any masked
    position for LLaDA, every row where a logits-based remasker fires)."""
    if i in plan.fire and plan.remasker is not None and plan.remasker.uses_logits:
        return torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    return (coins if coins is not None else x == plan.mask_tok).any(-1)


def reverse_step(plan: Plan, x: Tensor, i: int, logits_fn: LogitsFn,
                 generator: torch.Generator, row_hints: bool = False
                 ) -> tuple[Tensor, StepInfo]:
    """One reverse step at t_now = (i + 1)/N -> t_next = i/N."""
    t_now, _ = plan.times(i)
    p = plan.p_unmask(i, plan.pad_mask)
    coins = draw_coins(plan, x, p, generator)                          # (1)
    if row_hints:
        logits = logits_fn(x, t_now, rows_needed(plan, x, coins, i))   # (2)
    else:
        logits = logits_fn(x, t_now)
    prop = propose(plan, x, logits, i, generator, p=p, coins=coins)    # (3), (4)
    remasked = None
    if i in plan.fire:                                                 # (5)
        x_new, remasked = remask(plan, prop.x, prop.probs, i, generator)
    else:
        x_new = prop.x
    return x_new, StepInfo(x == plan.mask_tok, p, prop.reveal, remasked)


def clean_up(plan: Plan, x: Tensor, logits_fn: LogitsFn, row_hints: bool = False) -> Tensor:
    """Safety net after the last step: argmax at t = 1e-5 for any MASK left."""
    left = (x == plan.mask_tok) & plan.pad_mask
    if not bool(left.any()):
        return x
    logits = (logits_fn(x, CLEANUP_T, left.any(-1)) if row_hints
              else logits_fn(x, CLEANUP_T))
    x = torch.where(left, logits.argmax(-1), x)
    return torch.where(plan.pad_mask, x, plan.pad_tok)
