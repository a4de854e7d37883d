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

The step is built on the unguided reverse step's pieces (:mod:`bdgen.diffusion.reverse`):
the proposal is :func:`~bdgen.diffusion.reverse.propose` run once on the batch tiled K
times (row ``k*B + b`` is candidate k of sample b: the spec's block tiling, viewed as
``[K, B, S]``), and remasking is :func:`~bdgen.diffusion.reverse.remask` on the winners.
Scoring is one pass per constraint over all K x B candidates, which share their sample's
logits by broadcasting (:mod:`bdgen.guidance.violations`), so its cost grows with K only
through ``[K, B, S]`` element-wise work; the proposal's softmax and nucleus sort are K-fold
(cheap next to the shared model call).

Randomness, per step, from the chunk's generator, in this order and always with the same
shapes whatever the state of the batch: ``random`` unmasking coins ``U [K*B, S]``;
candidate tokens (top-p ``[K*B, S, 1]``, Gumbel ``[K*B, S, V]``, argmax nothing); the winner
``U [B]`` float64 (only if K > 1); remasking ``U [B, S]`` (only where it fires, for all
samples, locked or not). With K = 1 these are exactly the unguided sampler's draws, so
K = 1 reproduces the unguided samples bit for bit. The legacy code drew the winner from the
CPU generator in rounds 1-3 (G4.7); here everything is drawn on the sampling device.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from bdgen.diffusion.process import ForwardProcess
from bdgen.diffusion.reverse import LogitsFn, Plan, propose, remask
from bdgen.errors import BdgenError
from bdgen.guidance.constraints import ConstraintSet
from bdgen.guidance.names import Guidance
from bdgen.guidance.reward import candidate_weights, reward
from bdgen.guidance.violations import hard_decode, hard_violations, soft_violations

BOOST_K0 = 4               # option C: K / (K + K0) damps the boost for small K (G4.6)
BOOST_EPS = 1e-8           # option C: reward-std floor
BOOST_REPORT = 0.01        # option C: boosts above this count as "boosted" (diagnostics)
ENTROPY_LOG_FLOOR = -30.0  # weight entropy: ln w floored (G5.1)


class DecayedProcess:
    """A forward process whose remasking budget decays: ``sigma_max * t_now ** p`` after
    the process's own clamp to [0, 1] (the R7 schedule, G4.6); p_unmask unchanged."""

    def __init__(self, inner: ForwardProcess, power: float) -> None:
        self.inner, self.power = inner, float(power)

    def p_unmask(self, t_now: Tensor, t_next: Tensor, pad_mask: Tensor) -> Tensor:
        return self.inner.p_unmask(t_now, t_next, pad_mask)

    def sigma_max(self, t_now: Tensor, t_next: Tensor, pad_mask: Tensor) -> Tensor:
        s = self.inner.sigma_max(t_now, t_next, pad_mask)
        return s * (t_now.unsqueeze(-1) ** self.power).to(s.dtype)


@dataclass
class GuidedContext:
    """What stays fixed during a batch: the reverse-process plan (method, process,
    remasking steps, PAD layout), the guidance settings and constraints, the generator."""

    plan: Plan
    guidance: Guidance
    constraints: ConstraintSet
    generator: torch.Generator
    # steps 4-5; :func:`bdgen.diffusion.guided_fast.propose_candidates_shared` is the same
    # without tiling the logits
    proposal: Callable[..., tuple[Tensor, Tensor | None]] | None = None

    @classmethod
    def build(cls, plan: Plan, constraints: ConstraintSet, generator: torch.Generator,
              proposal: Callable[..., tuple[Tensor, Tensor | None]] | None = None
              ) -> GuidedContext:
        g = plan.method.guidance
        if g is None:
            raise BdgenError(f"method {plan.method.format()} is not guided")
        if g.decay_power:
            plan.process = DecayedProcess(plan.process, g.decay_power)
        return cls(plan, g, constraints, generator, proposal)

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
    g, cs, pad_mask = ctx.guidance, ctx.constraints, ctx.plan.pad_mask
    if g.reward_mode == "soft":
        v = soft_violations(cs, x, logits, pad_mask)
    else:  # hard: the argmax completion of every masked position, scored exactly
        v = hard_violations(cs, hard_decode(x, logits), pad_mask)
    return reward(v, cs, g.phi), v


def propose_candidates(ctx: GuidedContext, x: Tensor, logits: Tensor, i: int
                       ) -> tuple[Tensor, Tensor | None]:
    """Steps 4-5: the unguided unmask transition (reveal coins or LLaDA, candidate tokens,
    carry-over, PAD clamp; no remasking) on the batch tiled K times, ``[K, B, S]``, and the
    softmax of the shared logits ``[B, S, V]`` (None if the method needs none)."""
    plan, k, (b, s) = ctx.plan, ctx.K, x.shape
    tile = (k,) + (1,) * (logits.dim() - 1)
    p = plan.p_unmask(i, plan.pad_mask)
    prop = propose(plan, x.repeat(k, 1), logits.repeat(*tile), i, ctx.generator,
                   pad_mask=plan.pad_mask.repeat(k, 1), p=p.repeat(k, 1))
    probs = prop.probs[:b] if prop.probs is not None else None
    return prop.x.view(k, b, s), probs


def select(ctx: GuidedContext, weights: Tensor) -> Tensor:
    """Step 8: the winner ``k*_b ~ Categorical(w[:, b])`` ``[B]`` (inverse CDF of one float64
    uniform per sample; K = 1 draws nothing)."""
    k, b = weights.shape
    if k == 1:
        return torch.zeros(b, dtype=torch.long, device=weights.device)
    u = torch.rand((b,), generator=ctx.generator, device=weights.device, dtype=torch.float64)
    cdf = weights.cumsum(0)
    return (cdf < u * cdf[-1]).sum(0).clamp_max(k - 1)


def update_lock(g: Guidance, steps: int, lock: LockState, r_pre: Tensor, s: int) -> None:
    """Step 9: EMA of the winner's reward; a sample locks after C consecutive steps with
    ``EMA_s <= EMA_{s-1}`` (from the warm-up step on) or at the deadline; locks are
    permanent; no lock test at s = 0 (G4.6). ``steps`` = N (deadline and warm-up are
    fractions of it, truncated)."""
    if s == 0:
        lock.ema = r_pre.clone()
        return
    assert g.ema_beta is not None and g.ema_consecutive is not None  # set with the lock
    assert g.ema_warmup is not None and g.ema_deadline is not None
    beta = float(g.ema_beta)
    ema = beta * lock.ema + (1.0 - beta) * r_pre
    lock.streak = torch.where(ema - lock.ema <= 0, lock.streak + 1, 0)
    lock.ema = ema
    warmup, deadline = int(float(g.ema_warmup) * steps), int(float(g.ema_deadline) * steps)
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


def guided_step(ctx: GuidedContext, logits_fn: LogitsFn, x: Tensor, i: int,
                lock: LockState | None, rows: Tensor | None = None
                ) -> tuple[Tensor, dict[str, Tensor]]:
    """One guided step at loop index i (``t_now = (i+1)/N``); returns the new tokens and the
    step's per-sample diagnostics (G5.1 definitions, each ``[B]``).

    ``logits_fn(x, t, rows)``: the model's ``[B, S, V]`` logits; ``rows`` (bool ``[B]``, or
    None = all) are the rows whose logits the step uses (a fast ``logits_fn`` may compute
    only those).
    """
    plan, g, b = ctx.plan, ctx.guidance, x.shape[0]
    s = plan.steps - 1 - i
    t_now, _ = plan.times(i)
    fires = i in plan.fire          # remasking active: a remasker, i > 0, t_now < t_switch
    device = x.device
    logits = logits_fn(x, t_now, rows)              # 1. one model call for the K candidates
    was_mask = x == plan.mask_tok                   # 3. x_pre
    cand, probs = (ctx.proposal or propose_candidates)(ctx, x, logits, i)  # 2, 4-5. [K,B,S]
    r, v = score(ctx, cand, logits)                 # 6. [K, B], [K, B, C]
    w = candidate_weights(r, g.alpha, dim=0)        # 7. softmax_k(r / alpha)
    win = select(ctx, w)                            # 8. one winner per sample
    x = cand.gather(0, win.view(1, b, 1).expand(1, b, x.shape[1])).squeeze(0)
    r_pre = r.gather(0, win.view(1, b)).squeeze(0)
    v_win = v.gather(0, win.view(1, b, 1).expand(1, b, v.shape[-1])).squeeze(0)
    if lock is not None:                            # 9. EMA lock
        update_lock(g, plan.steps, lock, r_pre, s)
    locked = lock.locked if lock is not None else torch.zeros(b, dtype=torch.bool,
                                                              device=device)
    revealed = was_mask & (x != plan.mask_tok)
    boost = attribution_boost(cand, x, r, revealed) if (   # 10. option C
        fires and g.attribution_boost) else None
    protect = revealed if fires and g.protect_just_unmasked else None  # 11. option B
    winner, r_post = x, r_pre
    if fires:
        remask_logits, remask_probs = logits, probs  # 12. option A: a second call
        if g.fresh_logits_remask and not bool(locked.all()):
            remask_logits = logits_fn(x, t_now, ~locked if rows is not None else None)
            remask_probs = torch.softmax(remask_logits, dim=-1)
        x, _ = remask(plan, x, remask_probs, i, ctx.generator, protect=protect,  # 13-14.
                      boost=boost.to(torch.float32) if boost is not None else None)
        x = torch.where(locked.unsqueeze(-1), winner, x)                  # 15. undo locked
        r_post = torch.where(locked, r_pre, score(ctx, x, remask_logits)[0])  # 16.
    diag = step_diagnostics(w, r, r_pre, r_post, v_win)                   # 17.
    diag["positions_remasked"] = ((x == plan.mask_tok) & (winner != plan.mask_tok)).sum(-1)
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
