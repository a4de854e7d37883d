"""The two training losses: the MDLM ELBO of a fixed schedule (spec §3.4, with the
importance-sampling variants of §3.2) and the per-position ELBO of learned rates (§4.3).

Fixed schedule, per sample b:
``l_b = (sum of CE over masked real nodes and edges) / max(1, #such positions)`` (joint
normalisation, so small and large graphs weigh the same); the loss is
``mean_b[w(t_b) * l_b * f_b]`` with the ELBO weight w(t) (clamped <= 1000) and an IS factor
``f_b``: ``1/q(t_b)`` for the unbiased estimator, 1 for uniform t or the uncorrected
objective.

Learned rates: every masked real position l carries its own weight
``w_l = -alpha'_l / (1 - alpha_l + 1e-8)`` (float64, clamped <= 1000, then float32). Nodes and
edges are normalised **separately** by their numbers of masked real positions and combined
as ``L_nodes + lambda_edge * L_edges``. The rate network receives gradient through w (alpha
and alpha'), the denoiser through the cross-entropy; the hard loss mask carries none. There
is no t clamp here (the original's ``t_min`` was unused).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from bdgen.diffusion.schedules import T_MIN, W_MAX, NoiseSchedule
from bdgen.errors import BdgenError

IS_MODES = ("unbiased", "uncorrected", "off")
"""How t is drawn in training: importance sampling with the 1/q correction, importance
sampling without it (in expectation a w(t)^2-weighted objective: what the original code
trained), or uniform t."""

IS_MODE_ALIASES = {"legacy": "uncorrected"}
"""Earlier names, still accepted (``--is-mode legacy``)."""

STORED_IS_MODE = {"uncorrected": "legacy"}
"""The value the run identity keeps for a mode (data: run names and resume checks of runs
trained before the rename must not change)."""


def canonical_is_mode(mode: str) -> str:
    """``mode`` with aliases resolved; an unknown mode is an error listing the valid ones."""
    mode = IS_MODE_ALIASES.get(mode, mode)
    if mode not in IS_MODES:
        raise BdgenError(f"is_mode {mode!r} is not one of {', '.join(IS_MODES)} "
                         f"(or the alias legacy = uncorrected)")
    return mode


def _masked_ce(logits: Tensor, target: Tensor, loss_mask: Tensor,
               weight: Tensor | None) -> Tensor:
    """Per-position CE ``[B, P]``, zero outside ``loss_mask``; weighted by ``weight[target]``.

    Targets outside the loss mask are replaced by class 0 ("safe targets"), so CE never
    reads a -inf logit (MASK/PAD) and gradients stay finite.
    """
    safe = torch.where(loss_mask, target, torch.zeros_like(target))
    ce = F.cross_entropy(logits.flatten(0, 1), safe.flatten(), weight=weight, reduction="none")
    return ce.view_as(target) * loss_mask


def per_sample_ce(node_logits: Tensor, edge_logits: Tensor, x0: Tensor, loss_mask: Tensor,
                  edge_class_weights: Tensor | None,
                  node_class_weights: Tensor | None = None) -> Tensor:
    """``[B]`` jointly normalised CE over the positions of ``loss_mask`` (masked and real)."""
    n = node_logits.shape[1]
    node_ce = _masked_ce(node_logits, x0[:, :n], loss_mask[:, :n], node_class_weights)
    edge_ce = _masked_ce(edge_logits, x0[:, n:], loss_mask[:, n:], edge_class_weights)
    total = node_ce.sum(1) + edge_ce.sum(1)
    count = loss_mask.sum(1).clamp_min(1)
    return total / count


def sample_t(schedule: NoiseSchedule, batch: int, is_mode: str, device: torch.device | str,
             generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Draw training times and their IS factors: ``(t [B] float32, factor [B] float32)``.

    ``factor`` is ``1/q(t)`` in "unbiased" mode and 1 otherwise; t is clamped to [1e-5, 1].
    """
    is_mode = IS_MODE_ALIASES.get(is_mode, is_mode)
    if is_mode not in IS_MODES:
        raise ValueError(f"is_mode {is_mode!r} not in {IS_MODES}")
    u = torch.rand(batch, generator=generator, device=device)
    t = u if is_mode == "off" else schedule.importance_transform(u)
    t = t.clamp(T_MIN, 1.0)
    if is_mode == "unbiased":
        factor = (1.0 / schedule.importance_density(t.to(torch.float64))).to(torch.float32)
    else:
        factor = torch.ones_like(t)
    return t, factor


@dataclass
class LossOutput:
    loss: Tensor            # scalar, the objective that is differentiated
    per_sample: Tensor      # [B] jointly normalised CE (before weighting)
    weight: Tensor          # [B] w(t)


class ELBOLoss:
    """``loss = mean_b[w(t_b) * l_b * factor_b]`` (§3.4), with class-weighted edge CE."""

    def __init__(self, schedule: NoiseSchedule, edge_class_weights: Tensor,
                 node_class_weights: Tensor | None = None) -> None:
        self.schedule = schedule
        self.edge_class_weights = edge_class_weights
        self.node_class_weights = node_class_weights

    def __call__(self, node_logits: Tensor, edge_logits: Tensor, x0: Tensor, pad_mask: Tensor,
                 mask: Tensor, t: Tensor, factor: Tensor | None = None) -> LossOutput:
        loss_mask = mask & pad_mask
        per_sample = per_sample_ce(node_logits, edge_logits, x0, loss_mask,
                                   self.edge_class_weights, self.node_class_weights)
        w = self.schedule.loss_weight(t)
        scaled = w * per_sample if factor is None else w * factor * per_sample
        return LossOutput(scaled.mean(), per_sample, w)


def masked_accuracy(node_logits: Tensor, edge_logits: Tensor, x0: Tensor,
                    loss_mask: Tensor) -> Tensor:
    """``[4]`` counts: correct nodes, masked nodes, correct edges, masked edges (argmax)."""
    n = node_logits.shape[1]
    node_ok = (node_logits.argmax(-1) == x0[:, :n]) & loss_mask[:, :n]
    edge_ok = (edge_logits.argmax(-1) == x0[:, n:]) & loss_mask[:, n:]
    return torch.stack([node_ok.sum(), loss_mask[:, :n].sum(),
                        edge_ok.sum(), loss_mask[:, n:].sum()])


POSITION_WEIGHT_EPS = 1e-8  # denominator guard of w_l


def per_position_weight(alpha: Tensor, alpha_prime: Tensor, w_max: float = W_MAX,
                        eps: float = POSITION_WEIGHT_EPS) -> Tensor:
    """``min(-alpha'/(1 - alpha + eps), w_max)`` in float64, returned as float32 ``[B, S]``."""
    a = alpha.to(torch.float64)
    w = -alpha_prime.to(torch.float64) / (1.0 - a + eps)
    return w.clamp(max=w_max).to(torch.float32)


@dataclass
class PerPositionLossOutput:
    loss: Tensor    # scalar objective
    nodes: Tensor   # [B] L_nodes(b)
    edges: Tensor   # [B] L_edges(b)
    weight: Tensor  # [B, S] w_l (float32)


class PerPositionELBOLoss:
    """Learned rates: per-position weighted CE, separate node/edge normalisation."""

    def __init__(self, edge_class_weights: Tensor | None,
                 node_class_weights: Tensor | None = None, lambda_edge: float = 1.0,
                 w_max: float = W_MAX, eps: float = POSITION_WEIGHT_EPS) -> None:
        self.edge_class_weights = edge_class_weights
        self.node_class_weights = node_class_weights
        self.lambda_edge = lambda_edge
        self.w_max = w_max
        self.eps = eps

    def __call__(self, node_logits: Tensor, edge_logits: Tensor, x0: Tensor, pad_mask: Tensor,
                 mask: Tensor, alpha: Tensor, alpha_prime: Tensor) -> PerPositionLossOutput:
        n = node_logits.shape[1]
        loss_mask = mask & pad_mask
        w = per_position_weight(alpha, alpha_prime, self.w_max, self.eps)
        ecw = self.edge_class_weights
        if ecw is not None:
            ecw = ecw.to(device=edge_logits.device, dtype=edge_logits.dtype)
        ncw = self.node_class_weights
        if ncw is not None:
            ncw = ncw.to(device=node_logits.device, dtype=node_logits.dtype)
        node_ce = _masked_ce(node_logits, x0[:, :n], loss_mask[:, :n], ncw)
        edge_ce = _masked_ce(edge_logits, x0[:, n:], loss_mask[:, n:], ecw)
        nodes = (w[:, :n] * node_ce).sum(1) / loss_mask[:, :n].sum(1).clamp_min(1)
        edges = (w[:, n:] * edge_ce).sum(1) / loss_mask[:, n:].sum(1).clamp_min(1)
        loss = (nodes + self.lambda_edge * edges).mean()
        return PerPositionLossOutput(loss, nodes, edges, w)
