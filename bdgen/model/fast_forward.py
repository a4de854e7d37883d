"""Fast block paths of the denoiser, behind the reference interface (:mod:`.denoiser`).

:class:`FastDenoiser` has the module tree, parameters and ``forward`` of
:class:`~bdgen.model.denoiser.BDDenoiser` (checkpoints load into either) and replaces only
its :meth:`~bdgen.model.denoiser.BDDenoiser.trunk` (blocks + final modulation):

* **shared time** (eval mode, one t for the batch: a sampling step): t is embedded once and
  the modulation folded into the LayerNorms' affine parameters and the gates into the
  output projections' weights, which saves six elementwise passes over the activations;
* **bucketed** (eval mode, CPU): each group of samples with the same PAD pattern (room
  count) runs as a dense batch of its real positions, with no key mask;
* **packed** (training, CPU): only the real rows go through the token-wise layers,
  gathered and scattered around each attention;
* **CPU dropout**: keep masks from 16-bit slices of 64-bit random integers.

These are the same function up to float rounding (tests/test_fast_forward.py measures
it); with :meth:`FastDenoiser.use_reference_modules` the forward is the reference's,
bit for bit. PAD rows come back as zeros from the PAD-skipping paths; their outputs are
never used (PAD keys are masked in the dense path and PAD logits ignored).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bdgen.model.denoiser import AdaLNBlock, BDDenoiser, batch_times, modulate


def fast_dropout(x: Tensor, p: float, training: bool, fast: bool = True) -> Tensor:
    """Inverted dropout. On CPU the keep mask comes from 16-bit slices of 64-bit random
    integers (p rounded to a multiple of 2^-16), about twice as fast as ``F.dropout``'s
    per-element Bernoulli draws; elsewhere it is ``F.dropout``."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or not fast:
        return F.dropout(x, p, True)
    n = x.numel()
    words = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64)
    bits = words.view(torch.int16)[:n].view(x.shape)
    keep = bits >= round(p * 65536) - 32768
    return torch.where(keep, x * (1.0 / (1.0 - p)), torch.zeros((), dtype=x.dtype))


def _pad_groups(pad_mask: Tensor) -> Iterator[tuple[Tensor, Tensor]]:
    """``(sample indices, real positions)`` of each group of rows of ``pad_mask [B, S]``
    that share one PAD pattern (empty patterns skipped). Needs the mask on the host (one
    sync), which is why only the CPU path groups rows."""
    patterns, inverse = torch.unique(pad_mask, dim=0, return_inverse=True)
    for g, pattern in enumerate(patterns):
        pos = pattern.nonzero().squeeze(1)
        if pos.numel():
            yield (inverse == g).nonzero().squeeze(1), pos


def _attention(block: AdaLNBlock, qkv: Tensor, key_mask: Tensor | None, fast: bool) -> Tensor:
    """:meth:`AdaLNBlock.attention`, written out in CPU training so that the
    attention-probability dropout uses :func:`fast_dropout`."""
    if not (block.training and block.dropout > 0 and qkv.device.type == "cpu" and fast):
        return block.attention(qkv, key_mask)
    b, s, d3 = qkv.shape
    d = d3 // 3
    q, k, v = qkv.view(b, s, 3, block.n_heads, d // block.n_heads).permute(2, 0, 3, 1, 4)
    scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask, float("-inf"))
    attn = fast_dropout(scores.softmax(-1), block.dropout, True) @ v
    result: Tensor = attn.transpose(1, 2).reshape(b, s, d)
    return result


def _shifted_layer_norm(x: Tensor, norm: nn.LayerNorm, shift: Tensor, scale: Tensor) -> Tensor:
    """``modulate(norm(x), shift, scale)`` for one shared ``shift``/``scale [d]``."""
    return F.layer_norm(x, norm.normalized_shape, norm.weight * (1 + scale),
                        norm.bias * (1 + scale) + shift, norm.eps)


def _gated_residual(x: Tensor, h: Tensor, layer: nn.Linear, gate: Tensor) -> Tensor:
    """``x + gate * layer(h)`` for one shared ``gate [d]``, as a single matmul into x."""
    d = x.shape[-1]
    out = torch.addmm(x.reshape(-1, d), h.reshape(-1, h.shape[-1]),
                      (layer.weight * gate[:, None]).t())
    return out.add_(layer.bias * gate).view(x.shape)


def _block_shared_time(block: AdaLNBlock, x: Tensor, c: Tensor,
                       attend: Callable[[Tensor], Tensor]) -> Tensor:
    """The block when every row has the same time embedding ``c [1, cond]`` and no
    dropout: modulation folded into the weights (module docstring). ``attend``: the
    attention of ``qkv`` rows shaped as ``x``'s (dense, or the real rows only)."""
    shift1, scale1, gate1, shift2, scale2, gate2 = block.modulation(c)[0].chunk(6)
    h = _shifted_layer_norm(x, block.norm1, shift1, scale1)
    x = _gated_residual(x, attend(block.qkv(h)), block.attn_out, gate1)
    h = _shifted_layer_norm(x, block.norm2, shift2, scale2)
    mlp_in, act, mlp_out = block.mlp
    return _gated_residual(x, act(mlp_in(h)), cast(nn.Linear, mlp_out), gate2)


def _block(block: AdaLNBlock, x: Tensor, c: Tensor, key_mask: Tensor | None,
           fast: bool) -> Tensor:
    """:meth:`AdaLNBlock.forward` with the shared-time fold and the fast CPU dropout."""
    if c.shape[0] == 1 and not (block.training and block.dropout > 0):
        return _block_shared_time(block, x, c,
                                  lambda qkv: _attention(block, qkv, key_mask, fast))
    shift1, scale1, gate1, shift2, scale2, gate2 = block.modulation(c)[:, None].chunk(6, -1)
    h = modulate(block.norm1(x), shift1, scale1)
    attn = block.attn_out(_attention(block, block.qkv(h), key_mask, fast))
    x = x + gate1 * fast_dropout(attn, block.dropout, block.training, fast)
    h = modulate(block.norm2(x), shift2, scale2)
    result: Tensor = x + gate2 * fast_dropout(block.mlp(h), block.dropout, block.training, fast)
    return result


def _block_packed(block: AdaLNBlock, xp: Tensor, c: Tensor, key_mask: Tensor, rows: Tensor,
                  sample: Tensor, fast: bool) -> Tensor:
    """The block on the real positions only: ``xp [N, d]`` holds the rows ``rows`` of the
    flattened ``[B*S, d]`` sequence, ``sample`` their batch index."""
    b, s = key_mask.shape[0], key_mask.shape[-1]
    mod = block.modulation(c).index_select(0, sample)
    shift1, scale1, gate1, shift2, scale2, gate2 = mod.chunk(6, -1)
    h = modulate(block.norm1(xp), shift1, scale1)
    qkv = block.qkv(h)
    dense = qkv.new_zeros(b * s, qkv.shape[1]).index_copy(0, rows, qkv)
    attn = _attention(block, dense.view(b, s, -1), key_mask, fast)
    attn = block.attn_out(attn.reshape(b * s, -1).index_select(0, rows))
    xp = xp + gate1 * fast_dropout(attn, block.dropout, block.training, fast)
    h = modulate(block.norm2(xp), shift2, scale2)
    result: Tensor = xp + gate2 * fast_dropout(block.mlp(h), block.dropout, block.training, fast)
    return result


Attention = Callable[[AdaLNBlock, Tensor, Tensor | None], Tensor]
"""An implementation of :meth:`AdaLNBlock.attention` (eval mode): ``(block, qkv [B, S, 3d],
key_mask) -> [B, S, d]``. ``AdaLNBlock.attention`` itself is the reference's."""


def _dense_attention(block: AdaLNBlock, key_mask: Tensor, attention: Attention
                     ) -> Callable[[Tensor], Tensor]:
    """Attention of ``qkv [B, S, 3d]`` rows with PAD keys masked."""
    return lambda qkv: attention(block, qkv, key_mask)


def _rows_attention(block: AdaLNBlock, key_mask: Tensor, rows: Tensor, attention: Attention
                    ) -> Callable[[Tensor], Tensor]:
    """Attention for the real rows only: ``qkv [N, 3d]`` holds the rows ``rows`` of the
    flattened ``[B*S]`` sequence; they are scattered into the dense batch around attention
    (PAD keys masked there) and gathered back."""
    b, s = key_mask.shape[0], key_mask.shape[-1]

    def attend(qkv: Tensor) -> Tensor:
        dense = qkv.new_zeros(b * s, qkv.shape[1]).index_copy(0, rows, qkv)
        attn = attention(block, dense.view(b, s, -1), key_mask).reshape(b * s, -1)
        return attn.index_select(0, rows)

    return attend


def real_rows(pad_mask: Tensor) -> Tensor:
    """Flat indices ``[N]`` of the real positions of ``pad_mask [B, S]`` (one host sync:
    found once per batch, :meth:`FastDenoiser.trunk_sampling`)."""
    return pad_mask.reshape(-1).nonzero().squeeze(1)


class FastDenoiser(BDDenoiser):
    """:class:`BDDenoiser` with the fast trunk (module docstring); what the pipeline runs."""

    pack_real_positions: bool | None = None
    """Skip PAD positions: packed rows in training, bucketed room counts in eval mode.
    None = on CPU; off on CUDA, where selecting the rows would need a host sync every
    step."""

    share_time: bool = True
    """In eval mode a number ``t`` (one time for the whole batch) is embedded once and
    folded into the blocks' weights."""

    fast_cpu_dropout: bool = True
    """The fast CPU dropout (:func:`fast_dropout`); False = torch's own."""

    reference: bool = False
    """True = the reference trunk, bit for bit (:meth:`use_reference_modules`)."""

    def use_reference_modules(self) -> None:
        """Run the reference forward (dense rows, torch dropout, fused attention, per-row
        time embeddings): the computation as the original code did it, for benchmarks and
        cross-checks."""
        self.reference = True

    def forward(self, tokens: Tensor, pad_mask: Tensor, t: Tensor | float,
                condition: object = None, pre_embedded: Tensor | None = None,
                real_rows: Tensor | None = None, attention: Attention | None = None
                ) -> tuple[Tensor, Tensor]:
        """:meth:`BDDenoiser.forward`; with ``real_rows`` or ``attention`` (eval mode, one
        shared time: a sampling step) the trunk is :meth:`trunk_sampling`'s."""
        if real_rows is None and attention is None:
            return super().forward(tokens, pad_mask, t, condition, pre_embedded)
        b = tokens.shape[0]
        x = self.embed(tokens) + self.positional_encoding()
        return self.heads(self.trunk_sampling(x, batch_times(t, b, tokens.device), pad_mask,
                                              real_rows, attention or AdaLNBlock.attention))

    def trunk_sampling(self, x: Tensor, t: Tensor, pad_mask: Tensor, rows: Tensor | None,
                       attention: Attention) -> Tensor:
        """The eval-mode trunk of a sampling step (one shared time) with a chosen
        ``attention`` (e.g. :func:`bdgen.model.short_attention.block_attention`).

        ``rows``: the real rows (flat indices of ``pad_mask``'s True entries,
        :func:`real_rows`), given rather than found so that a CUDA forward needs no host
        sync and can be captured in a graph: the token-wise layers skip the PAD rows (a
        quarter of an RPLAN batch), attention runs on the dense batch with PAD keys masked,
        and PAD rows come back as zeros. None = every row, as :meth:`trunk`."""
        if self.training or t.stride(0) != 0:
            raise ValueError("trunk_sampling is the sampling path: eval mode, one shared time")
        b, s, d = x.shape
        c = self.time_condition(t[:1])
        key_mask = pad_mask[:, None, None, :]
        if rows is None:
            for block in self.blocks:
                blk = cast(AdaLNBlock, block)
                x = _block_shared_time(blk, x, c, _dense_attention(blk, key_mask, attention))
            return self._final(x, c)
        xp = x.reshape(b * s, d).index_select(0, rows)
        for block in self.blocks:
            blk = cast(AdaLNBlock, block)
            xp = _block_shared_time(blk, xp, c, _rows_attention(blk, key_mask, rows, attention))
        xp = self._final(xp, c)
        return xp.new_zeros(b * s, d).index_copy(0, rows, xp).view(b, s, d)

    def _packs(self, x: Tensor) -> bool:
        if self.pack_real_positions is None:
            return x.device.type == "cpu"
        return self.pack_real_positions

    def trunk(self, x: Tensor, t: Tensor, pad_mask: Tensor) -> Tensor:
        if self.reference:
            return super().trunk(x, t, pad_mask)
        if self.share_time and not self.training and t.stride(0) == 0:
            t = t[:1]  # one t for the batch (a sampling step): embed once, fold into weights
        c = self.time_condition(t)
        key_mask = pad_mask[:, None, None, :]
        if self._packs(x):
            return (self._blocks_packed(x, c, pad_mask, key_mask) if self.training
                    else self._blocks_bucketed(x, c, pad_mask))
        for block in self.blocks:
            x = _block(cast(AdaLNBlock, block), x, c, key_mask, self.fast_cpu_dropout)
        return self._final(x, c)

    def _blocks_packed(self, x: Tensor, c: Tensor, pad_mask: Tensor, key_mask: Tensor
                       ) -> Tensor:
        """Blocks + final modulation on the real rows, gathered and scattered around each
        block's attention (training: one graph that torch.compile captures whole, and the
        dropout draws of earlier versions); PAD rows come back as zeros."""
        b, s, d = x.shape
        rows = pad_mask.reshape(-1).nonzero().squeeze(1)
        sample = torch.div(rows, s, rounding_mode="floor")
        xp = x.reshape(b * s, d).index_select(0, rows)
        for block in self.blocks:
            xp = _block_packed(cast(AdaLNBlock, block), xp, c, key_mask, rows, sample,
                               self.fast_cpu_dropout)
        shift, scale = self.final_modulation(c).index_select(0, sample).chunk(2, -1)
        xp = modulate(self.final_norm(xp), shift, scale)
        return xp.new_zeros(b * s, d).index_copy(0, rows, xp).view(b, s, d)

    def _blocks_bucketed(self, x: Tensor, c: Tensor, pad_mask: Tensor) -> Tensor:
        """Blocks + final modulation on the real positions only, one group of samples with
        the same PAD pattern at a time: a group's real positions form a dense
        ``[b_g, L_g, d]`` batch with no PAD key, so attention needs no mask and costs L_g^2
        rather than S^2, and the token-wise layers skip the PAD rows (a quarter of an RPLAN
        batch) with one gather in and one scatter out instead of one per layer."""
        b, s, d = x.shape
        flat = x.reshape(b * s, d)
        all_rows, parts = [], []
        for idx, pos in _pad_groups(pad_mask):
            rows = (idx[:, None] * s + pos[None, :]).reshape(-1)
            h = flat.index_select(0, rows).view(idx.numel(), pos.numel(), d)
            cg = c if c.shape[0] == 1 else c.index_select(0, idx)
            for block in self.blocks:
                h = _block(cast(AdaLNBlock, block), h, cg, None, self.fast_cpu_dropout)
            all_rows.append(rows)
            parts.append(self._final(h, cg).reshape(-1, d))
        if not parts:
            return torch.zeros_like(x)
        return flat.new_zeros(b * s, d).index_copy(
            0, torch.cat(all_rows), torch.cat(parts)).view(b, s, d)

    def _final(self, x: Tensor, c: Tensor) -> Tensor:
        if c.shape[0] == 1:
            shift, scale = self.final_modulation(c)[0].chunk(2)
            return _shifted_layer_norm(x, self.final_norm, shift, scale)
        shift, scale = self.final_modulation(c)[:, None].chunk(2, -1)
        return modulate(self.final_norm(x), shift, scale)
