"""Denoising metrics (spec §6.11): how well the model fills in masked real positions.

For every t of the grid, the first ``max_batches`` batches of the (unshuffled) validation
split are forward-masked at that fixed t and the model is scored on the positions that are
both masked and real: argmax accuracy and unweighted cross-entropy, for node and edge
slots, as means over all scored positions.

Seeding (the legacy numbers were unseeded, spec §10 item 10): the masks of each t are
drawn from a CPU ``torch.Generator`` seeded with ``seed`` (default
:data:`DENOISING_SEED`) at the start of that t, so every value is reproducible and
independent of which other t values are in the grid.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from bdgen.eval.registry import DENOISING_T_GRID

DENOISING_SEED = 0
AlphaFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``alpha(t, pad_mask)``: keep probabilities ``[B, 1]`` or ``[B, S]``, e.g. the ``alpha``
method of a forward process (:mod:`bdgen.diffusion.process`)."""


def denoising_key(quantity: str, t: float) -> str:
    return f"denoise/{quantity}@t={t:.1f}"


@torch.no_grad()
def denoising_metrics(model: torch.nn.Module, alpha_fn: AlphaFn, split: Any,
                      t_grid: Sequence[float] = DENOISING_T_GRID, batch_size: int = 64,
                      max_batches: int = 50, seed: int = DENOISING_SEED) -> dict[str, float]:
    """``denoise/{acc,ce}_{node,edge}@t=...`` on ``split`` (a SplitData-like object)."""
    from bdgen.diffusion.forward import forward_mask

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    tokens_all, pad_all = split.tokens, split.pad_mask
    vocab = getattr(model, "vocab", None)
    n_max = int(vocab.n_max) if vocab is not None else None
    if n_max is None:
        from bdgen.diffusion.forward import n_max_from_seq_len

        n_max = n_max_from_seq_len(int(tokens_all.shape[1]))
    n_total = min(len(tokens_all), batch_size * max_batches)
    out: dict[str, float] = {}
    try:
        for t_val in t_grid:
            gen = torch.Generator().manual_seed(seed)
            sums = {"acc_node": 0.0, "acc_edge": 0.0, "ce_node": 0.0, "ce_edge": 0.0}
            counts = {"node": 0, "edge": 0}
            for start in range(0, n_total, batch_size):
                x0 = tokens_all[start:min(start + batch_size, n_total)]
                pad = pad_all[start:start + len(x0)]
                t = torch.full((len(x0),), float(t_val), dtype=torch.float32)
                alpha = alpha_fn(t, pad)
                x_t, mask = forward_mask(x0, pad, alpha, generator=gen)
                node_logits, edge_logits = model(x_t.to(device), pad.to(device), t.to(device))
                for part, logits, sl in (("node", node_logits, slice(0, n_max)),
                                         ("edge", edge_logits, slice(n_max, None))):
                    scored = mask[:, sl].to(device)
                    if not scored.any():
                        continue
                    lg = logits[scored].double()
                    target = x0[:, sl].to(device)[scored]
                    sums[f"acc_{part}"] += float((lg.argmax(-1) == target).sum())
                    sums[f"ce_{part}"] += float(F.cross_entropy(lg, target, reduction="sum"))
                    counts[part] += int(scored.sum())
            for q in ("acc_node", "acc_edge", "ce_node", "ce_edge"):
                c = counts[q.split("_")[1]]
                out[denoising_key(q, t_val)] = sums[q] / c if c else float("nan")
    finally:
        model.train(was_training)
    # Legacy key order: per t, acc_node, acc_edge, ce_node, ce_edge.
    return out
