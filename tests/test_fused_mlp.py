"""The fused MLP kernel (bdgen/model/fused_mlp.py) against the reference MLP and gated
residual: on CUDA where there is one, else in Triton's interpreter on CPU
(``TRITON_INTERPRET=1``, set by conftest.py). The interpreter's bf16 products are wrong, so
bf16 is checked only on CUDA (here and in ``bench/gpu_smoke.py``)."""

from __future__ import annotations

import pytest
import torch

from bdgen.data.vocab import RPLAN_VOCAB
from bdgen.diffusion.sampler import model_logits
from bdgen.model.denoiser import AdaLNBlock, ModelConfig
from bdgen.model.fast_forward import FastDenoiser, mlp_residual, real_rows
from bdgen.model.fused_mlp import block_mlp, fused_mlp, supported

pytest.importorskip("triton", reason="Triton (the dev extra) runs the kernel")
CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
DTYPES = [(torch.float32, 1e-5), (torch.float16, 1e-2)] + ([(torch.bfloat16, 5e-2)] if CUDA else [])


def block(d: int = 64) -> AdaLNBlock:
    torch.manual_seed(d)
    b = AdaLNBlock(ModelConfig(d, 1, 2, d, 4, 0.0, 32)).eval().to(DEVICE)
    with torch.no_grad():
        for p in b.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return b


def reference(blk: AdaLNBlock, x: torch.Tensor, h: torch.Tensor, gate: torch.Tensor
              ) -> torch.Tensor:
    return (x.double() + gate.double() * blk.mlp.double()(h.double())).float()


@pytest.mark.parametrize(("dtype", "tol"), DTYPES)
@pytest.mark.parametrize(("rows", "d"), [(200, 64), (37, 128), (1, 32)])
def test_equals_the_reference(dtype: torch.dtype, tol: float, rows: int, d: int) -> None:
    """Row counts that do not fill the last tile, and several widths."""
    blk = block(d)
    g = torch.Generator().manual_seed(rows)
    x, h = (torch.randn(rows, d, generator=g).to(DEVICE) for _ in range(2))
    gate = torch.randn(d, generator=g).to(DEVICE)
    mlp_in, mlp_out = blk.mlp[0], blk.mlp[2]
    got = fused_mlp(x, h.to(dtype), mlp_in.weight, mlp_in.bias, mlp_out.weight * gate[:, None],
                    mlp_out.bias * gate)
    assert got.dtype == dtype and got.shape == (rows, d)
    want = reference(blk.to(dtype).float(), x, h.to(dtype).float(), gate)
    assert torch.allclose(got.float(), want, atol=tol * want.abs().max().item(), rtol=tol)


def test_three_dimensional_rows_and_a_wide_residual() -> None:
    """``x``/``h`` as ``[B, S, d]``; ``x`` in fp32 (the first block's residual stream)."""
    blk = block(32)
    x, h = torch.randn(3, 36, 32, device=DEVICE), torch.randn(3, 36, 32, device=DEVICE)
    gate = torch.rand(32, device=DEVICE)
    mlp_in, mlp_out = blk.mlp[0], blk.mlp[2]
    got = fused_mlp(x, h.half(), mlp_in.weight, mlp_in.bias, mlp_out.weight * gate[:, None],
                    mlp_out.bias * gate)
    want = reference(blk.half().float(), x, h.half().float(), gate)
    assert got.shape == (3, 36, 32)
    assert torch.allclose(got.float(), want, atol=1e-2 * want.abs().max().item())


def test_block_mlp_falls_back_to_the_reference() -> None:
    """fp32, CPU, and a GELU other than the exact one keep the reference's MLP, bit for
    bit."""
    blk = block(32)
    x, h, gate = torch.randn(5, 32), torch.randn(5, 32), torch.rand(32)
    cpu_block = blk.cpu()
    assert torch.equal(block_mlp(cpu_block, x, h, gate), mlp_residual(cpu_block, x, h, gate))
    assert not supported(cpu_block, h, torch.float32)
    assert supported(cpu_block, h, torch.float16)
    cpu_block.mlp[1] = torch.nn.GELU(approximate="tanh")
    assert not supported(cpu_block, h, torch.float16)


def test_denoiser_with_the_kernel_equals_its_dense_forward() -> None:
    """The sampling forward with the kernel (fp16 weights and activations), on the dense
    batch and on the real rows only, gives the fp32 dense forward's logits to 16-bit
    rounding at every real position."""
    torch.manual_seed(0)
    model = FastDenoiser(ModelConfig(64, 2, 2, 64, 4, 0.0, 32), RPLAN_VOCAB).eval().to(DEVICE)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    b, s = 12, RPLAN_VOCAB.seq_len
    pad = torch.ones(b, s, dtype=torch.bool, device=DEVICE)
    pad[1, 20:] = False
    x = torch.randint(0, 13, (b, s), device=DEVICE)
    t = torch.full((), 0.4, device=DEVICE)

    def kernel_mlp(blk: AdaLNBlock, xr: torch.Tensor, h: torch.Tensor, gate: torch.Tensor
                   ) -> torch.Tensor:
        mlp_in, mlp_out = blk.mlp[0], blk.mlp[2]
        out = fused_mlp(xr, h.half(), mlp_in.weight, mlp_in.bias,
                        mlp_out.weight * gate[:, None], mlp_out.bias * gate)
        return out.float()

    with torch.no_grad():
        dense = model_logits(model, x, pad, t)
        real = pad[..., None] & torch.isfinite(dense)
        for rows in (None, real_rows(pad)):
            node, edge = model(x, pad, t, real_rows=rows, mlp=kernel_mlp)
            n = node.shape[1]
            err = (node.float() - dense[:, :n, :node.shape[-1]]).abs()
            assert err[real[:, :n, :node.shape[-1]]].max() < 0.05
            e = edge.shape[-1]
            err = (edge.float() - dense[:, n:, :e]).abs()
            assert err[real[:, n:, :e]].max() < 0.05


def test_the_kernels_compile_as_opaque_ops() -> None:
    """Both kernels inside one ``torch.compile``'d function (whole graph, AOT tracing with
    their fake implementations) give the uncompiled numbers."""
    from bdgen.model.short_attention import short_attention

    g = torch.Generator().manual_seed(0)
    qkv = torch.randn(4, 36, 192, generator=g).half().to(DEVICE)
    keep = torch.ones(4, 36, dtype=torch.bool, device=DEVICE)
    keep[1, 20:] = False
    w1, b1 = torch.randn(256, 64, device=DEVICE), torch.randn(256, device=DEVICE)
    w2, b2 = torch.randn(64, 256, device=DEVICE), torch.randn(64, device=DEVICE)
    x = torch.randn(4, 36, 64, device=DEVICE)

    def forward(qkv: torch.Tensor, keep: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return fused_mlp(x, short_attention(qkv, keep[:, None, None, :], 2), w1, b1, w2, b2)

    compiled = torch.compile(forward, backend="aot_eager", fullgraph=True)
    assert torch.equal(compiled(qkv, keep, x), forward(qkv, keep, x))
