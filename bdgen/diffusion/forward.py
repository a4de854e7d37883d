"""Forward (noising) process of v1: independent Bernoulli masking of real positions (§3.3)."""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from bdgen.data.vocab import EDGE_MASK, NODE_MASK


def n_max_from_seq_len(seq_len: int) -> int:
    """Invert ``seq_len = n + n(n-1)/2`` (= n(n+1)/2); ValueError if no integer n fits."""
    n = int(round((math.sqrt(8 * seq_len + 1) - 1) / 2))
    if n * (n + 1) // 2 != seq_len or n < 2:
        raise ValueError(f"sequence length {seq_len} is not n_max + n_max(n_max-1)/2")
    return n


def mask_tokens(seq_len: int, device: torch.device | str = "cpu") -> Tensor:
    """``[S]`` int64: the MASK token of every slot (13 on node slots, 11 on edge slots).

    Cached per (length, device) so a training step launches no kernels for it; treat the
    result as read-only.
    """
    return _mask_tokens(seq_len, str(torch.device(device)))


@functools.lru_cache(maxsize=32)
def _mask_tokens(seq_len: int, device: str) -> Tensor:
    n = n_max_from_seq_len(seq_len)
    out = torch.full((seq_len,), EDGE_MASK, dtype=torch.long)
    out[:n] = NODE_MASK
    return out.to(device)


def forward_mask(x0: Tensor, pad_mask: Tensor, alpha: Tensor,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Mask each real position with probability ``1 - alpha``; PAD is never masked.

    ``alpha`` is ``[B, 1]`` (one keep probability per sample) or ``[B, S]`` (per position).
    Returns ``(x_t, mask)`` where ``mask`` marks the positions that were replaced by MASK.
    """
    u = torch.rand(x0.shape, generator=generator, device=x0.device, dtype=torch.float32)
    mask = (u >= alpha) & pad_mask
    x_t = torch.where(mask, mask_tokens(x0.shape[1], x0.device), x0)
    return x_t, mask
