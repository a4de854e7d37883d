"""Attention for short sequences as one Triton kernel: what the ``_compiled`` methods run
on CUDA in place of :meth:`~bdgen.model.denoiser.AdaLNBlock.attention`'s SDPA call.

Why: a bubble diagram is 36 tokens (8 rooms + 28 room pairs), so at 1000 samples a
forward's attention is 4000 (sample, head) problems of 36 x 36 x 32. SDPA's kernels are
built for long sequences: tiles of 64+ keys, and ``q``/``k``/``v`` read through the head
permute of ``qkv``. Here one program holds a whole (sample, head) problem in registers:
it reads its rows of ``qkv [B, S, 3d]`` where they lie, masks PAD keys, takes the softmax
in fp32 and writes its slice of ``[B, S, d]``, one pass over the memory.

It is the same function as the reference up to float rounding (fp32 products in fp32,
``input_precision="ieee"``, not TF32; bf16 like flash attention: bf16 products, fp32
sums, the probabilities cast to bf16 for the value product). tests/test_short_attention.py
checks it against SDPA (natively on CUDA, in Triton's interpreter on CPU), as does
``bench/gpu_smoke.py``.
A query row whose keys are all PAD (no such row in a real batch) comes back as zeros.

A CPU install of torch has no Triton: :func:`block_attention` is then the block's own
SDPA.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
from torch import Tensor

from bdgen.model.denoiser import AdaLNBlock
from bdgen.model.triton_support import HAVE_TRITON

MAX_SEQUENCE = 128
"""Longest sequence one program holds (a [S, S] score tile in registers)."""


def supported(qkv: Tensor, n_heads: int) -> bool:
    """Whether :func:`short_attention` takes this ``qkv``: a short sequence, a head size
    Triton's dot product takes (a power of two, at least 16), a float type it computes."""
    head = qkv.shape[-1] // (3 * n_heads)
    return (qkv.shape[1] <= MAX_SEQUENCE and head >= 16 and head & (head - 1) == 0
            and qkv.dtype in (torch.float32, torch.bfloat16, torch.float16))


@functools.cache
def _kernel() -> Any:
    import triton
    import triton.language as tl

    @triton.jit  # type: ignore[untyped-decorator,misc,unused-ignore]
    def attention_kernel(  # type: ignore[no-untyped-def]
            qkv, keep, out, seq_len, scale, qkv_batch, qkv_row, keep_batch, out_batch,
            out_row, HEADS: tl.constexpr, HEAD: tl.constexpr, BLOCK: tl.constexpr,
            IEEE: tl.constexpr) -> None:
        sample, head = tl.program_id(0), tl.program_id(1)
        rows = tl.arange(0, BLOCK)
        cols = tl.arange(0, HEAD)
        real = rows < seq_len
        at = (qkv + sample.to(tl.int64) * qkv_batch + rows[:, None] * qkv_row
              + head * HEAD + cols[None, :])
        q = tl.load(at, mask=real[:, None], other=0.0)
        k = tl.load(at + HEADS * HEAD, mask=real[:, None], other=0.0)
        v = tl.load(at + 2 * HEADS * HEAD, mask=real[:, None], other=0.0)
        if IEEE:
            scores = tl.dot(q, tl.trans(k), input_precision="ieee") * scale
        else:
            scores = tl.dot(q, tl.trans(k)) * scale
        key_real = tl.load(keep + sample.to(tl.int64) * keep_batch + rows, mask=real,
                           other=0) != 0
        scores = tl.where(key_real[None, :], scores, float("-inf"))
        top = tl.max(scores, 1)
        top = tl.where(top == float("-inf"), 0.0, top)
        weights = tl.exp(scores - top[:, None])
        total = tl.sum(weights, 1)
        if IEEE:
            result = tl.dot(weights, v, input_precision="ieee")
        else:
            result = tl.dot(weights.to(v.dtype), v)
        result = result / tl.where(total > 0, total, 1.0)[:, None]
        to = (out + sample.to(tl.int64) * out_batch + rows[:, None] * out_row
              + head * HEAD + cols[None, :])
        tl.store(to, result.to(out.dtype.element_ty), mask=real[:, None])

    return attention_kernel


def short_attention(qkv: Tensor, key_mask: Tensor | None, n_heads: int) -> Tensor:
    """``qkv [B, S, 3d]`` -> attention output ``[B, S, d]``, as
    :meth:`~bdgen.model.denoiser.AdaLNBlock.attention` (no dropout); ``key_mask``: True
    for real keys, ``[B, 1, 1, S]`` or ``[B, S]``, None = every key is real."""
    result: Tensor = torch.ops.bdgen.short_attention(qkv, _keep(qkv, key_mask), n_heads)
    return result


def block_attention(block: AdaLNBlock, qkv: Tensor, key_mask: Tensor | None) -> Tensor:
    """:func:`short_attention` as a :data:`~bdgen.model.fast_forward.Attention` on CUDA,
    falling back to the block's own (SDPA) elsewhere and where the kernel does not apply
    (:func:`supported`)."""
    if not HAVE_TRITON or qkv.device.type != "cuda" or not supported(qkv, block.n_heads):
        return block.attention(qkv, key_mask)
    return short_attention(qkv, key_mask, block.n_heads)


def _keep(qkv: Tensor, key_mask: Tensor | None) -> Tensor:
    b, s = qkv.shape[:2]
    if key_mask is None:
        return torch.ones(b, s, dtype=torch.uint8, device=qkv.device)
    return key_mask.reshape(b, s).to(torch.uint8).contiguous()  # the kernel reads rows


@torch.library.custom_op("bdgen::short_attention", mutates_args=())
def _short_attention_op(qkv: Tensor, keep: Tensor, n_heads: int) -> Tensor:
    """``torch.ops.bdgen.short_attention``: one opaque op to ``torch.compile`` (it runs the
    kernel as it is), captured with the rest of the forward in the loop's CUDA graph."""
    import triton

    if qkv.stride(-1) != 1:
        qkv = qkv.contiguous()
    b, s, d3 = qkv.shape
    d = d3 // 3
    head = d // n_heads
    out = qkv.new_empty(b, s, d)
    block = max(16, triton.next_power_of_2(s))
    _kernel()[(b, n_heads)](
        qkv, keep, out, s, 1.0 / math.sqrt(head), qkv.stride(0), qkv.stride(1),
        keep.stride(0), out.stride(0), out.stride(1), HEADS=n_heads, HEAD=head,
        BLOCK=block, IEEE=qkv.dtype == torch.float32, num_warps=4 if block <= 64 else 8)
    return out


@_short_attention_op.register_fake
def _(qkv: Tensor, keep: Tensor, n_heads: int) -> Tensor:
    b, s, d3 = qkv.shape
    return qkv.new_empty(b, s, d3 // 3)
