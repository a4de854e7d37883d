"""v2 training-time forward process: straight-through Gumbel-softmax masking (spec §4.2).

Bernoulli masking has no gradient with respect to α, so during v2 training the keep/mask
decision of every position is drawn with the straight-through Gumbel-softmax estimator: the
forward value is a hard 0/1 decision, the gradient is that of the tempered soft sample. The
decision enters the denoiser as a *soft embedding* mixed from the denoiser's own token tables,
which is how the rate network receives gradient from the reconstruction term.

Validation and evaluation use plain Bernoulli masking with per-position α (no STGS):
:func:`forward_mask_eval_learned`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bdgen.data.vocab import EDGE_MASK, NODE_MASK
from bdgen.diffusion.forward import forward_mask, mask_tokens
from bdgen.errors import BdgenError
from bdgen.model.denoiser import BDDenoiser

GUMBEL_U_CLAMP = 1e-10
LOG_CLAMP = 1e-8
TAU_SCHEDULES = ("linear", "cosine", "constant")


def gumbel_noise(shape: torch.Size | tuple[int, ...], device: torch.device | str,
                 generator: torch.Generator | None = None) -> Tensor:
    """Standard Gumbel noise ``−ln(−ln u)`` in float64, u clamped to [1e-10, 1 − 1e-10] (§3.6)."""
    u = torch.rand(shape, generator=generator, device=device, dtype=torch.float64)
    u = u.clamp(GUMBEL_U_CLAMP, 1.0 - GUMBEL_U_CLAMP)
    return -torch.log(-torch.log(u))


def straight_through_mask(alpha: Tensor, pad_mask: Tensor, tau: float,
                          generator: torch.Generator | None = None) -> Tensor:
    """Straight-through two-class sample ``[B, S, 2]`` float32: (p_keep, p_mask).

    Forward values are exactly 0/1 (the hard sample); gradients are those of
    ``softmax((logits + g)/τ)`` with logits ``[ln α, ln(1 − α)]`` (clamped at 1e-8). PAD
    positions are forced to keep = 1, mask = 0, which also removes their gradient.
    """
    if tau <= 0:
        raise ValueError(f"Gumbel temperature must be > 0, got {tau}")
    a = alpha.to(torch.float64)
    logits = torch.stack([torch.log(a.clamp_min(LOG_CLAMP)),
                          torch.log((1.0 - a).clamp_min(LOG_CLAMP))], dim=-1)
    g = gumbel_noise(logits.shape, logits.device, generator)
    soft = F.softmax((logits + g) / tau, dim=-1).to(torch.float32)
    hard = F.one_hot(soft.argmax(-1), 2).to(torch.float32)
    st = hard - soft.detach() + soft
    keep = torch.where(pad_mask, st[..., 0], torch.ones_like(st[..., 0]))
    mask = torch.where(pad_mask, st[..., 1], torch.zeros_like(st[..., 1]))
    return torch.stack([keep, mask], dim=-1)


@dataclass
class STGSSample:
    """One STGS draw for a batch."""

    embeddings: Tensor  # [B, S, d] soft embeddings, the denoiser's ``pre_embedded`` input
    mask: Tensor        # [B, S] bool: hard mask decision at real positions (the loss mask)
    x_t: Tensor         # [B, S] int64: discrete masked tokens (for inspection; not fed in training)
    p_mask: Tensor      # [B, S] float32: straight-through mask probability (0/1 forward values)


def soft_embeddings(node_embedding: nn.Embedding, edge_embedding: nn.Embedding, x0: Tensor,
                    p: Tensor, n_max: int) -> Tensor:
    """``e_l = p_keep·E[x0_l] + p_mask·E[MASK]`` per part, with the denoiser's own tables."""
    p_keep, p_mask = p[..., 0:1], p[..., 1:2]
    node = p_keep[:, :n_max] * node_embedding(x0[:, :n_max]) \
        + p_mask[:, :n_max] * node_embedding.weight[NODE_MASK]
    edge = p_keep[:, n_max:] * edge_embedding(x0[:, n_max:]) \
        + p_mask[:, n_max:] * edge_embedding.weight[EDGE_MASK]
    return torch.cat([node, edge], dim=1)


def stgs_forward(denoiser: BDDenoiser, x0: Tensor, pad_mask: Tensor, alpha: Tensor, tau: float,
                 generator: torch.Generator | None = None) -> STGSSample:
    """Draw the STGS masking of ``x0`` with per-position keep probabilities ``alpha [B, S]``.

    ``denoiser`` must expose ``node_embedding`` / ``edge_embedding`` tables and ``vocab``
    (:class:`bdgen.model.denoiser.BDDenoiser`). Call the denoiser afterwards as
    ``denoiser(x0, pad_mask, t, pre_embedded=sample.embeddings)``.
    """
    n_max = denoiser.vocab.n_max
    p = straight_through_mask(alpha, pad_mask, tau, generator)
    emb = soft_embeddings(denoiser.node_embedding, denoiser.edge_embedding, x0, p, n_max)
    p_mask = p[..., 1]
    mask = (p_mask > 0.5) & pad_mask
    x_t = torch.where(mask, mask_tokens(x0.shape[1], x0.device), x0)
    return STGSSample(emb, mask, x_t, p_mask)


def forward_mask_eval_learned(x0: Tensor, pad_mask: Tensor, alpha: Tensor,
                              generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Validation/evaluation masking for v2: Bernoulli with per-position α ``[B, S]`` (no STGS)."""
    if alpha.dim() != 2 or alpha.shape != x0.shape:
        raise ValueError(f"per-position alpha must have shape {tuple(x0.shape)}, "
                         f"got {tuple(alpha.shape)}")
    return forward_mask(x0, pad_mask, alpha, generator)


def anneal_progress(index: int, total: int) -> float:
    """Progress in [0, 1] of epoch (or step) ``index`` of ``total``: ``index/max(total−1, 1)``."""
    return min(max(index / max(total - 1, 1), 0.0), 1.0)


def gumbel_temperature(progress: float, tau_start: float = 1.0, tau_end: float = 0.1,
                       schedule: str = "linear") -> float:
    """Annealed Gumbel temperature (spec §4.2): linear, cosine, or constant (= ``tau_start``)."""
    if schedule == "linear":
        return tau_start + progress * (tau_end - tau_start)
    if schedule == "cosine":
        return tau_end + 0.5 * (tau_start - tau_end) * (1.0 + math.cos(math.pi * progress))
    if schedule == "constant":
        return tau_start
    raise BdgenError(f"unknown Gumbel temperature schedule {schedule!r}; valid: {TAU_SCHEDULES}")
