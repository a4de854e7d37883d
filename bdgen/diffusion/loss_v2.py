"""The v2 per-position ELBO (``ELBOLossV2``, spec §4.3).

Every masked real position l carries its own weight ``w_l = −α'_l / (1 − α_l + 1e-8)``
(float64, clamped ≤ 1000, then float32). Nodes and edges are normalised **separately** by their
numbers of masked real positions and combined as ``L_nodes + λ_edge · L_edges``. The rate network
receives gradient through w (α and α'), the denoiser through the cross-entropy; the hard loss
mask carries none. There is no t clamp here (the legacy ``t_min`` was unused).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bdgen.diffusion.loss import _masked_ce
from bdgen.diffusion.schedules import W_MAX

EPS = 1e-8  # denominator guard of w_l


def per_position_weight(alpha: Tensor, alpha_prime: Tensor, w_max: float = W_MAX,
                        eps: float = EPS) -> Tensor:
    """``min(−α'/(1 − α + eps), w_max)`` computed in float64, returned as float32 ``[B, S]``."""
    a = alpha.to(torch.float64)
    w = -alpha_prime.to(torch.float64) / (1.0 - a + eps)
    return w.clamp(max=w_max).to(torch.float32)


@dataclass
class LossV2Output:
    loss: Tensor    # scalar objective
    nodes: Tensor   # [B] L_nodes(b)
    edges: Tensor   # [B] L_edges(b)
    weight: Tensor  # [B, S] w_l (float32)


class ELBOLossV2:
    """Per-position weighted CE with separate node/edge normalisation and ``lambda_edge``."""

    def __init__(self, edge_class_weights: Tensor, node_class_weights: Tensor | None = None,
                 lambda_edge: float = 1.0, w_max: float = W_MAX, eps: float = EPS) -> None:
        self.edge_class_weights = edge_class_weights
        self.node_class_weights = node_class_weights
        self.lambda_edge = lambda_edge
        self.w_max = w_max
        self.eps = eps

    def __call__(self, node_logits: Tensor, edge_logits: Tensor, x0: Tensor, pad_mask: Tensor,
                 mask: Tensor, alpha: Tensor, alpha_prime: Tensor) -> LossV2Output:
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
        return LossV2Output(loss, nodes, edges, w)
