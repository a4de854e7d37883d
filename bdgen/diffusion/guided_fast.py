"""The guided proposal without tiling the logits: same candidates as
:func:`bdgen.diffusion.guided_step.propose_candidates`, bit for bit (tests/test_guided_sampler.py,
``bench/guided.py --check``).

Why: the reference proposal runs the unguided unmask transition on the batch tiled K times,
so the softmax, the nucleus sort and its cumulative sums are computed K times on identical
rows. Here they are computed once per sample and the K draws broadcast against them; the
random draws are the reference's (same generator, shapes ``[K*B, ...]`` viewed as
``[K, B, ...]``, same order), so every element is computed from the same numbers by the same
operations.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bdgen.diffusion.guided_step import GuidedContext
from bdgen.diffusion.reverse import GUMBEL_U_MIN, _cumsum_last, llada_reveal


def propose_candidates_shared(ctx: GuidedContext, x: Tensor, logits: Tensor, i: int
                              ) -> tuple[Tensor, Tensor | None]:
    """``[K, B, S]`` candidates and the shared ``softmax(logits)`` (None if not needed)."""
    plan, k, (b, s), gen = ctx.plan, ctx.K, x.shape, ctx.generator
    method, dev = plan.method, x.device
    p = plan.p_unmask(i, plan.pad_mask)
    is_mask = x == plan.mask_tok
    reveal = None
    if method.unmasking == "random":  # the coins come first, as in reverse.propose
        u = torch.rand((k * b, s), generator=gen, device=dev).view(k, b, s)
        reveal = is_mask & (u < p)
    probs = torch.softmax(logits, dim=-1) if plan.needs_probs else None
    if method.top_p is not None:
        assert probs is not None  # top-p needs them (Plan.needs_probs)
        sp, si = probs.sort(dim=-1, descending=True)
        cs = _cumsum_last(sp)
        kept = sp * ((cs - sp) < method.top_p)
        kcs = _cumsum_last(kept)
        r = torch.rand((k * b, s, 1), generator=gen, device=dev).view(k, b, s, 1) \
            * kcs[..., -1:]
        idx = (kcs <= r).sum(-1, keepdim=True)
        last = ((kept > 0).sum(-1, keepdim=True) - 1).clamp_min(0)
        tokens = si.expand(k, *si.shape).gather(-1, torch.minimum(idx, last)).squeeze(-1)
    elif method.temperature == 0.0:
        tokens = logits.argmax(-1).expand(k, b, s)
    else:
        v = logits.shape[-1]
        u = torch.rand((k * b, s, v), generator=gen, device=dev, dtype=torch.float64
                       ).clamp(GUMBEL_U_MIN, 1.0 - GUMBEL_U_MIN).view(k, b, s, v)
        tokens = ((logits / method.temperature).to(torch.float64)
                  + -torch.log(-torch.log(u))).argmax(-1)
    if reveal is None:  # llada: the most confident candidates of each of the K rows
        assert probs is not None
        conf = probs.expand(k, *probs.shape).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        reveal = llada_reveal(is_mask.repeat(k, 1), conf.reshape(k * b, s),
                              p.repeat(k, 1), last_step=(i == 0)).view(k, b, s)
    cand = torch.where(reveal, tokens, x)
    return torch.where(plan.pad_mask, cand, plan.pad_tok), probs
