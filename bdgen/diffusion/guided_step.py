"""One step of constraint-guided (SVDD) sampling, top to bottom (GUIDANCE_SPEC G4.3-G4.6).

SVDD (Li et al., arXiv:2408.08252) without retraining: the unguided reverse step is the
*proposal*. Each step calls the model once, draws K candidate transitions of every sample
from that proposal, scores every candidate with the constraint reward, keeps one candidate
per sample drawn with the importance weights ``softmax(r / alpha)``, and then remasks the
winner as the unguided sampler would (ReMDM), with the optional mitigations of rounds 4-7:

* option C, attribution boost: the winner's just-revealed positions whose token the
  higher-reward candidates share get a confidence boost, so the confidence strategy
  remasks them less (confidence strategy only);
* option B, protect just-unmasked: the positions revealed in this step are not remasked
  in this step;
* option A, fresh logits: remasking (and its post-remask score) use a second model call on
  the winner instead of the step's logits;
* EMA lock: per sample, an exponential moving average of the winner's reward; after C
  consecutive non-improving steps (from the warm-up on) or at the deadline the sample is
  locked and never remasked again (guidance goes on);
* decay: the remasking budget sigma_max is multiplied by ``t_now ** p``.

Tensors of candidates are ``[K, B, ...]``: candidate k of sample b is row ``[k, b]`` (the
spec's block tiling of K·B rows viewed as (K, B)). The K candidates share the sample's
logits by broadcasting, so nothing of size ``K x S x V`` is built except Gumbel noise in
temperature mode; the sort of the top-p nucleus is done once per sample, not per
candidate, and scoring is one pass per constraint over all K·B candidates
(:mod:`bdgen.guidance.violations`): the cost grows with K only through ``[K, B, S]``
element-wise work.

Randomness, per step, from the chunk's generator, in this order and always with the same
shapes whatever the state of the batch: ``random`` unmasking ``U [K, B, S]`` float32;
candidate tokens (top-p ``[K, B, S, 1]``, Gumbel ``[K, B, S, V]``, argmax nothing); the
winner ``U [B]`` float64 (only if K > 1); remasking ``U [B, S]`` (only where it fires,
for all samples, locked or not). With K = 1 the draws are exactly those of the unguided
sampler, so K = 1 reproduces the unguided samples bit for bit. The legacy code drew the
winner from the CPU generator in rounds 1-3 (G4.7); here everything is drawn on the
sampling device.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from bdgen.diffusion.method import Method
from bdgen.diffusion.process import ForwardProcess
from bdgen.diffusion.remasking import RemaskingStrategy
from bdgen.diffusion.sampler import _cumsum_last, _llada_reveal
from bdgen.guidance.constraints import ConstraintSet
from bdgen.guidance.names import Guidance
from bdgen.guidance.reward import candidate_weights, reward
from bdgen.guidance.violations import hard_decode, hard_violations, soft_violations

GUMBEL_U_MIN = 1e-10
BOOST_K0 = 4               # option C: K / (K + K0) damps the boost for small K (G4.6)
BOOST_EPS = 1e-8           # option C: reward-std floor
BOOST_REPORT = 0.01        # option C: boosts above this count as "boosted" (diagnostics)
ENTROPY_LOG_FLOOR = -30.0  # weight entropy: ln w floored (G5.1)

LogitsFn = Callable[[Tensor, float, "Tensor | None"], Tensor]
"""``logits_fn(x, t, rows)``: ``[B, S, V]`` float32 logits of ``x`` at time t; ``rows``
(bool ``[B]`` or None = all) are the rows whose logits are used (others may be zeros)."""


@dataclass
class GuidedContext:
    """What stays fixed during a batch: the settings, the model and the layout."""

    method: Method
    guidance: Guidance
    constraints: ConstraintSet
    process: ForwardProcess
    remasker: RemaskingStrategy | None
    mask_tok: Tensor          # [S] MASK token per position
    pad_tok: Tensor           # [S] PAD token per position
    pad_mask: Tensor          # [B, S] True = real position
    steps: int
    generator: torch.Generator

    @property
    def K(self) -> int:  # noqa: N802 - the spec's name
        return self.guidance.num_candidates


@dataclass
class LockState:
    """EMA lock per sample (G4.6): EMA of the winner's reward, streak of non-improving
    steps, locked flag and the step s it was locked at (-1 = not locked)."""

    ema: Tensor      # float64 [B]
    streak: Tensor   # int64 [B]
    locked: Tensor   # bool [B]
    lock_step: Tensor  # int64 [B]

    @classmethod
    def start(cls, b: int, device: torch.device) -> LockState:
        return cls(torch.full((b,), torch.nan, dtype=torch.float64, device=device),
                   torch.zeros(b, dtype=torch.long, device=device),
                   torch.zeros(b, dtype=torch.bool, device=device),
                   torch.full((b,), -1, dtype=torch.long, device=device))


def score(ctx: GuidedContext, x: Tensor, logits: Tensor) -> tuple[Tensor, Tensor]:
    """Rewards ``[...]`` and violations ``[..., C]`` (float64) of token sequences ``[..., B,
    S]``, candidates of one sample sharing its ``[B, S, V]`` logits (G4.4)."""
    g, cs = ctx.guidance, ctx.constraints
    if g.reward_mode == "soft":
        v = soft_violations(cs, x, logits, ctx.pad_mask)
    else:  # hard: the argmax completion of every masked position, scored exactly
        v = hard_violations(cs, hard_decode(x, logits), ctx.pad_mask)
    return reward(v, cs, g.phi), v


def draw_candidate_tokens(logits: Tensor, probs: Tensor | None, method: Method, k: int,
                          generator: torch.Generator) -> Tensor:
    """``[k, B, S]`` candidate tokens for every position: k independent draws from the
    proposal of each position (top-p > argmax > temperature, spec §5.3c).

    The nucleus is sorted once per sample and shared by its k draws; k = 1 draws exactly
    what the unguided sampler draws (same shapes, same order)."""
    b, s, v = logits.shape
    if method.top_p is not None:
        sp, si = probs.sort(dim=-1, descending=True)
        cs = _cumsum_last(sp)
        kept = sp * ((cs - sp) < method.top_p)          # preceding mass >= top_p dropped
        kcs = _cumsum_last(kept)
        r = torch.rand((k, b, s, 1), generator=generator, device=logits.device) * kcs[..., -1:]
        idx = (kcs <= r).sum(-1, keepdim=True)
        last = ((kept > 0).sum(-1, keepdim=True) - 1).clamp_min(0)
        return si.expand(k, b, s, v).gather(-1, torch.minimum(idx, last)).squeeze(-1)
    if method.temperature == 0.0:
        return logits.argmax(-1).expand(k, b, s)
    u = torch.rand((k, b, s, v), generator=generator, device=logits.device,
                   dtype=torch.float64).clamp(GUMBEL_U_MIN, 1.0 - GUMBEL_U_MIN)
    return ((logits / method.temperature).to(torch.float64) - torch.log(-torch.log(u))
            ).argmax(-1)


def propose(ctx: GuidedContext, x: Tensor, logits: Tensor, probs: Tensor | None,
            p_unmask: Tensor, last_step: bool) -> Tensor:
    """Step 5: K candidate transitions ``[K, B, S]`` of the unguided unmask step (reveal by
    LLaDA confidence or coin flip, carry-over, PAD clamp); no remasking."""
    k, (b, s) = ctx.K, x.shape
    is_mask = x == ctx.mask_tok
    if ctx.method.unmasking == "random":   # drawn before the tokens, as unguided
        u = torch.rand((k, b, s), generator=ctx.generator, device=x.device)
        reveal = is_mask & (u < p_unmask)
    tokens = draw_candidate_tokens(logits, probs, ctx.method, k, ctx.generator)
    if ctx.method.unmasking == "llada":
        conf = probs.expand(k, b, s, probs.shape[-1]).gather(-1, tokens.unsqueeze(-1))
        rows = _llada_reveal(is_mask.expand(k, b, s).reshape(k * b, s),
                             conf.reshape(k * b, s),
                             p_unmask.expand(k, *p_unmask.shape).reshape(k * b, -1),
                             last_step)
        reveal = rows.reshape(k, b, s)
    cand = torch.where(reveal, tokens, x)
    return torch.where(ctx.pad_mask, cand, ctx.pad_tok)


def select(ctx: GuidedContext, weights: Tensor) -> Tensor:
    """Step 8: the winner ``k*_b ~ Categorical(w[:, b])`` ``[B]`` (inverse CDF of one float64
    uniform per sample; K = 1 draws nothing)."""
    k, b = weights.shape
    if k == 1:
        return torch.zeros(b, dtype=torch.long, device=weights.device)
    u = torch.rand((b,), generator=ctx.generator, device=weights.device, dtype=torch.float64)
    cdf = weights.cumsum(0)
    return (cdf < u * cdf[-1]).sum(0).clamp_max(k - 1)


def update_lock(ctx: GuidedContext, lock: LockState, r_pre: Tensor, s: int) -> None:
    """Step 9: EMA of the winner's reward; a sample locks after C consecutive steps with
    ``EMA_s <= EMA_{s-1}`` (from the warm-up step on) or at the deadline; locks are
    permanent; no lock test at s = 0 (G4.6)."""
    g = ctx.guidance
    if s == 0:
        lock.ema = r_pre.clone()
        return
    beta = float(g.ema_beta)
    ema = beta * lock.ema + (1.0 - beta) * r_pre
    lock.streak = torch.where(ema - lock.ema <= 0, lock.streak + 1, 0)
    lock.ema = ema
    warmup, deadline = int(float(g.ema_warmup) * ctx.steps), int(float(g.ema_deadline) *
                                                                  ctx.steps)
    new = ~lock.locked & (((lock.streak >= int(g.ema_consecutive)) & (s >= warmup))
                          | (s >= deadline))
    lock.locked = lock.locked | new
    lock.lock_step = torch.where(new, s, lock.lock_step)


def attribution_boost(cand: Tensor, winner: Tensor, rewards: Tensor, revealed: Tensor
                      ) -> Tensor:
    """Option C (G4.6): float64 ``[B, S]`` boost of the winner's just-revealed positions.

    At position l, ``a_l`` = mean reward of the candidates that agree with the winner there
    minus the mean reward of all; boost = ``max(a_l, 0) * (K/(K+K0)) / (std_k r + eps)``
    (Bessel std), zero where the rewards do not vary."""
    k = cand.shape[0]
    if k < 2:
        return torch.zeros(winner.shape, dtype=torch.float64, device=winner.device)
    agree = (cand == winner.unsqueeze(0)).to(torch.float64)               # [K, B, S]
    n = agree.sum(0).clamp_min(1.0)
    a = (agree * rewards.unsqueeze(-1)).sum(0) / n - rewards.mean(0).unsqueeze(-1)
    std = rewards.std(0, correction=1)
    scale = (k / (k + BOOST_K0)) / (std + BOOST_EPS)
    boost = scale.unsqueeze(-1) * a.clamp_min(0.0) * revealed
    return torch.where((std < BOOST_EPS).unsqueeze(-1), 0.0, boost)


def remask(ctx: GuidedContext, x: Tensor, logits: Tensor, t_now: float, t_next: float,
           boost: Tensor | None, protect: Tensor | None) -> Tensor:
    """Step 14: the unguided ReMDM remasking of the winner (spec §5.5-5.6) with the optional
    additive confidence boost, protected positions and decay ``sigma_max * t_now^p``."""
    b, device = x.shape[0], x.device
    t_now64 = torch.full((b,), t_now, dtype=torch.float64, device=device)
    t_next64 = torch.full((b,), t_next, dtype=torch.float64, device=device)
    sigma_max = ctx.process.sigma_max(t_now64, t_next64, ctx.pad_mask)
    if ctx.guidance.decay_power:
        sigma_max = sigma_max * (t_now ** ctx.guidance.decay_power)
    candidates = (x != ctx.mask_tok) & ctx.pad_mask
    if protect is not None:
        candidates = candidates & ~protect
    tok_p = None
    if ctx.remasker.uses_logits:
        tok_p = torch.softmax(logits, dim=-1).gather(-1, x.unsqueeze(-1)).squeeze(-1)
        if boost is not None:
            tok_p = tok_p + boost.to(torch.float32)
    sig = ctx.remasker.probabilities(sigma_max, candidates, tok_p)
    u = torch.rand((b, x.shape[1]), generator=ctx.generator, device=device)
    return torch.where(candidates & (u < sig), ctx.mask_tok, x)


def guided_step(ctx: GuidedContext, logits_fn: LogitsFn, x: Tensor, i: int, fires: bool,
                lock: LockState | None, rows: Tensor | None = None
                ) -> tuple[Tensor, dict[str, Tensor]]:
    """One guided step at loop index i (``t_now = (i+1)/N``); returns the new tokens and the
    step's per-sample diagnostics (G5.1 definitions, each ``[B]``).

    ``fires``: remasking is active at this step (a remasker, i > 0, t_now < t_switch).
    ``rows``: the rows whose logits this step needs (compaction; None = all).
    """
    g, b = ctx.guidance, x.shape[0]
    s = ctx.steps - 1 - i
    t_now, t_next = (i + 1) / ctx.steps, i / ctx.steps
    device = x.device
    # 1-2. one model call shared by the K candidates; the unguided unmasking probability
    logits = logits_fn(x, t_now, rows)
    p_unmask = ctx.process.p_unmask(torch.full((b,), t_now, dtype=torch.float32, device=device),
                                    torch.full((b,), t_next, dtype=torch.float64, device=device),
                                    ctx.pad_mask)
    probs = torch.softmax(logits, dim=-1) if (
        ctx.method.top_p is not None or ctx.method.unmasking == "llada") else None
    was_mask = x == ctx.mask_tok                                          # 3. x_pre
    # 4-6. K candidate transitions from the proposal, each scored
    cand = propose(ctx, x, logits, probs, p_unmask, last_step=(i == 0))  # [K, B, S]
    r, v = score(ctx, cand, logits)                                       # [K, B], [K, B, C]
    # 7-8. importance weights and one winner per sample
    w = candidate_weights(r, g.alpha, dim=0)
    win = select(ctx, w)
    x = cand.gather(0, win.view(1, b, 1).expand(1, b, x.shape[1])).squeeze(0)
    r_pre = r.gather(0, win.view(1, b)).squeeze(0)
    v_win = v.gather(0, win.view(1, b, 1).expand(1, b, v.shape[-1])).squeeze(0)
    if lock is not None:                                                  # 9.
        update_lock(ctx, lock, r_pre, s)
    locked = lock.locked if lock is not None else torch.zeros(b, dtype=torch.bool,
                                                              device=device)
    revealed = was_mask & (x != ctx.mask_tok)
    boost = attribution_boost(cand, x, r, revealed) if (           # 10. option C
        fires and g.attribution_boost) else None
    protect = revealed if fires and g.protect_just_unmasked else None  # 11. option B
    winner, r_post = x, r_pre
    if fires:
        remask_logits = logits                                            # 12. option A
        if g.fresh_logits_remask and not bool(locked.all()):
            remask_logits = logits_fn(x, t_now, ~locked if rows is not None else None)
        x = remask(ctx, x, remask_logits, t_now, t_next, boost, protect)  # 13-14.
        x = torch.where(locked.unsqueeze(-1), winner, x)                  # 15. undo locked
        r_post = torch.where(locked, r_pre, score(ctx, x, remask_logits)[0])  # 16.
    diag = step_diagnostics(w, r, r_pre, r_post, v_win)
    diag["positions_remasked"] = ((x == ctx.mask_tok) & (winner != ctx.mask_tok)).sum(-1)
    diag["positions_protected"] = (protect.sum(-1) if protect is not None
                                   else torch.zeros(b, dtype=torch.long, device=device))
    big = boost > BOOST_REPORT if boost is not None else torch.zeros_like(was_mask)
    diag["positions_boosted"] = big.sum(-1)
    diag["boost_sum"] = (torch.where(big, boost, 0.0).sum(-1) if boost is not None
                         else torch.zeros(b, dtype=torch.float64, device=device))
    diag["samples_locked"] = locked
    return x, diag


def step_diagnostics(w: Tensor, r: Tensor, r_pre: Tensor, r_post: Tensor, v_win: Tensor
                     ) -> dict[str, Tensor]:
    """Per-sample weight and reward diagnostics of one step (G5.1), float64 ``[B]``."""
    k = w.shape[0]
    entropy = -(w * w.log().clamp_min(ENTROPY_LOG_FLOOR)).sum(0)
    mean_r = r.mean(0)
    out = {
        "ess": 1.0 / (w * w).sum(0),
        "max_weight": w.max(0).values,
        "weight_entropy": entropy / math.log(k) if k > 1 else torch.ones_like(entropy),
        "reward_selected": r_pre,
        "reward_all_candidates": mean_r,
        "reward_gap": r_pre - mean_r,
        "reward_pre_remask": r_pre,
        "reward_post_remask": r_post,
        "reward_remasking_delta": r_post - r_pre,
    }
    for c in range(v_win.shape[-1]):
        out[f"violation/{c}"] = v_win[:, c]
    return out
