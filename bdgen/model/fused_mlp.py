"""A block's MLP and gated residual, ``x + gate * W2 GELU(W1 h + b1) + gate * b2``, as one
Triton kernel: what the ``_compiled`` methods run on CUDA in 16-bit precisions.

Why: at 1000 samples x 36 tokens the MLP's hidden activations are 36000 x 512, and torch
runs the MLP as three kernels (GEMM, GELU, GEMM plus residual), writing and reading the
hidden activations twice; the GELU alone was 8-15 ms of a 115 ms bf16 sampling run on an
H200 (docs/BENCHMARKS.md). Here one program takes a tile of rows through both products,
a chunk of hidden units at a time, with the hidden activations only in registers.

The numbers are torch's under autocast up to float rounding: 16-bit products with fp32
sums, the first product plus its bias rounded to 16 bits before the exact (erf) GELU, the
GELU rounded to 16 bits before the second product, the residual sum in fp32.
tests/test_fused_mlp.py checks it against the reference in Triton's interpreter on CPU
(fp16; the interpreter's bf16 products are wrong); ``bench/gpu_smoke.py`` on CUDA.
"""

from __future__ import annotations

import functools
from typing import Any, cast

import torch
from torch import Tensor, nn

from bdgen.model.denoiser import AdaLNBlock
from bdgen.model.triton_support import HAVE_TRITON

BLOCK_ROWS = 64
"""Rows per program; with ``CHUNK`` hidden units at a time the fp32 tiles fit in the
registers of four warps."""
CHUNK = 64
SIXTEEN_BITS = (torch.bfloat16, torch.float16)


def supported(block: AdaLNBlock, h: Tensor, dtype: torch.dtype) -> bool:
    """Whether :func:`fused_mlp` computes this block's MLP: exact GELU, sizes Triton's dot
    product takes, a 16-bit ``dtype`` (fp32 MLPs stay on cuBLAS, which is faster there)."""
    mlp_in, act, mlp_out = cast(nn.Linear, block.mlp[0]), block.mlp[1], block.mlp[2]
    d, hidden = h.shape[-1], mlp_in.out_features
    return (isinstance(act, nn.GELU) and act.approximate == "none" and dtype in SIXTEEN_BITS
            and d >= 16 and d & (d - 1) == 0 and d <= 256 and hidden % CHUNK == 0
            and mlp_out.bias is not None and mlp_in.bias is not None)


@functools.cache
def _kernel() -> Any:
    import triton
    import triton.language as tl

    @triton.jit  # type: ignore[untyped-decorator,misc,unused-ignore]
    def mlp_kernel(  # type: ignore[no-untyped-def]
            h, x, w1t, b1, w2t, b2, out, n_rows, h_row, x_row, out_row, D: tl.constexpr,
            HIDDEN: tl.constexpr, BLOCK: tl.constexpr, CHUNK: tl.constexpr,
            IEEE: tl.constexpr) -> None:
        rows = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        real = rows < n_rows
        cols = tl.arange(0, D)
        hh = tl.load(h + rows[:, None] * h_row + cols[None, :], mask=real[:, None], other=0.0)
        acc = tl.zeros([BLOCK, D], dtype=tl.float32)
        for start in range(0, HIDDEN, CHUNK):
            units = start + tl.arange(0, CHUNK)
            w1 = tl.load(w1t + cols[:, None] * HIDDEN + units[None, :])  # [D, CHUNK]
            if IEEE:  # noqa: SIM108 (a branch on a compile-time constant)
                a = tl.dot(hh, w1, input_precision="ieee")
            else:
                a = tl.dot(hh, w1)
            # the first linear's output, rounded to the input type as torch's
            a = (a + tl.load(b1 + units)[None, :].to(tl.float32)).to(hh.dtype).to(tl.float32)
            g = (0.5 * a * (1.0 + tl.math.erf(a * 0.7071067811865476))).to(hh.dtype)
            w2 = tl.load(w2t + units[:, None] * D + cols[None, :])  # [CHUNK, D]
            if IEEE:  # noqa: SIM108
                acc = tl.dot(g, w2, acc, input_precision="ieee")
            else:
                acc = tl.dot(g, w2, acc)
        res = tl.load(x + rows[:, None] * x_row + cols[None, :], mask=real[:, None], other=0.0)
        acc += res.to(tl.float32) + tl.load(b2 + cols)[None, :].to(tl.float32)
        tl.store(out + rows[:, None] * out_row + cols[None, :],
                 acc.to(out.dtype.element_ty), mask=real[:, None])

    return mlp_kernel


def fused_mlp(x: Tensor, h: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor
              ) -> Tensor:
    """``x + (GELU(h w1^T + b1) w2^T + b2)`` for ``x, h [..., d]``, nn.Linear weights
    ``w1 [hidden, d]``, ``w2 [d, hidden]``; computed in ``h``'s type, returned in it."""
    shape = x.shape
    d = shape[-1]
    result: Tensor = torch.ops.bdgen.fused_mlp(
        x.reshape(-1, d), h.reshape(-1, d), w1.t().to(h.dtype).contiguous(), b1.to(h.dtype),
        w2.t().to(h.dtype).contiguous(), b2.float())
    return result.view(shape)


def block_mlp(block: AdaLNBlock, x: Tensor, h: Tensor, gate: Tensor) -> Tensor:
    """``x + gate * block.mlp(h)`` (a :data:`~bdgen.model.fast_forward.MLP`) with the kernel
    on CUDA under 16-bit autocast; elsewhere the reference's
    (:func:`~bdgen.model.fast_forward.mlp_residual`)."""
    from bdgen.model.fast_forward import mlp_residual

    on_cuda = h.device.type == "cuda"
    dtype = torch.get_autocast_dtype("cuda") if on_cuda and torch.is_autocast_enabled(
        "cuda") else h.dtype
    if not (HAVE_TRITON and on_cuda and supported(block, h, dtype)):
        return mlp_residual(block, x, h, gate)
    mlp_in, mlp_out = cast(nn.Linear, block.mlp[0]), cast(nn.Linear, block.mlp[2])
    return fused_mlp(x, h.to(dtype), mlp_in.weight, mlp_in.bias, mlp_out.weight * gate[:, None],
                     mlp_out.bias * gate)


@torch.library.custom_op("bdgen::fused_mlp", mutates_args=())
def _fused_mlp_op(x: Tensor, h: Tensor, w1t: Tensor, b1: Tensor, w2t: Tensor, b2: Tensor
                  ) -> Tensor:
    """``torch.ops.bdgen.fused_mlp`` on rows ``[N, d]``, an opaque op to ``torch.compile``
    (as ``short_attention``'s)."""
    import triton

    x, h = (t if t.stride(-1) == 1 else t.contiguous() for t in (x, h))
    n, d = h.shape
    out = h.new_empty(n, d)
    _kernel()[(triton.cdiv(n, BLOCK_ROWS),)](
        h, x, w1t, b1, w2t, b2, out, n, h.stride(0), x.stride(0), out.stride(0), D=d,
        HIDDEN=w1t.shape[1], BLOCK=BLOCK_ROWS, CHUNK=CHUNK, IEEE=h.dtype == torch.float32,
        num_warps=4)
    return out


@_fused_mlp_op.register_fake
def _(x: Tensor, h: Tensor, w1t: Tensor, b1: Tensor, w2t: Tensor, b2: Tensor) -> Tensor:
    return h.new_empty(h.shape)
