"""The short-sequence attention kernel (bdgen/model/short_attention.py) against SDPA: on
CUDA where there is one, else in Triton's interpreter on CPU (``TRITON_INTERPRET=1``, set
by conftest.py before Triton is imported).

The interpreter computes bf16 dot products wrongly (its NumPy arrays have no bf16), so
bf16 is checked only on CUDA (here and in ``bench/gpu_smoke.py``).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bdgen.data.vocab import RPLAN_VOCAB
from bdgen.diffusion.sampler import model_logits
from bdgen.model.denoiser import AdaLNBlock, ModelConfig
from bdgen.model.fast_forward import FastDenoiser, real_rows
from bdgen.model.short_attention import block_attention, short_attention, supported

pytest.importorskip("triton", reason="Triton (the dev extra) runs the kernel")
CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
DTYPES = [(torch.float32, 2e-6), (torch.float16, 2e-3)] + ([(torch.bfloat16, 2e-2)] if CUDA else [])


def kernel_attention(block: AdaLNBlock, qkv: torch.Tensor,
                     key_mask: torch.Tensor | None) -> torch.Tensor:
    """The kernel as a block's attention on any device (``block_attention`` uses it on CUDA
    only)."""
    return short_attention(qkv, key_mask, block.n_heads)


def reference(qkv: torch.Tensor, key_mask: torch.Tensor | None, heads: int) -> torch.Tensor:
    b, s, d3 = qkv.shape
    q, k, v = qkv.float().view(b, s, 3, heads, d3 // (3 * heads)).permute(2, 0, 3, 1, 4)
    mask = None if key_mask is None else key_mask.reshape(b, 1, 1, s)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.transpose(1, 2).reshape(b, s, d3 // 3)


def pad_mask(b: int, s: int) -> torch.Tensor:
    """Real positions with the gaps of an RPLAN batch: PAD tails and PAD runs inside."""
    mask = torch.ones(b, s, dtype=torch.bool)
    mask[1, s // 2:] = False
    mask[2, 3:8] = False
    mask[3, 1:] = False
    return mask


@pytest.mark.parametrize(("dtype", "tol"), DTYPES)
@pytest.mark.parametrize(("s", "heads", "head"), [(36, 4, 32), (9, 2, 16), (100, 1, 64)])
def test_equals_sdpa(dtype: torch.dtype, tol: float, s: int, heads: int, head: int) -> None:
    g = torch.Generator().manual_seed(s)
    qkv = torch.randn(5, s, 3 * heads * head, generator=g).to(DEVICE, dtype)
    mask = pad_mask(5, s).to(DEVICE)
    got = short_attention(qkv, mask[:, None, None, :], heads)
    assert got.dtype == dtype and got.shape == (5, s, heads * head)
    assert torch.allclose(got.float(), reference(qkv, mask, heads), atol=tol, rtol=tol)
    unmasked = short_attention(qkv, None, heads)
    assert torch.allclose(unmasked.float(), reference(qkv, None, heads), atol=tol, rtol=tol)


def test_reads_qkv_in_place_and_a_sample_with_no_real_key_is_zero() -> None:
    """A strided ``qkv`` (a slice of a wider buffer) is read where it lies; a sample whose
    keys are all PAD (SDPA: NaN) comes back as zeros."""
    g = torch.Generator().manual_seed(0)
    wide = torch.randn(4, 36, 2 * 384, generator=g).to(DEVICE)
    qkv = wide[:, :, :384]
    mask = pad_mask(4, 36).to(DEVICE)
    mask[0] = False
    got = short_attention(qkv, mask, 4)
    assert torch.equal(got[0], torch.zeros(36, 128, device=DEVICE))
    assert torch.allclose(got[1:], reference(qkv, mask, 4)[1:], atol=2e-6, rtol=2e-6)


def test_unsupported_shapes_fall_back_to_the_blocks_sdpa() -> None:
    block = AdaLNBlock(ModelConfig(24, 1, 2, 24, 4, 0.0, 32)).eval().to(DEVICE)  # head 12
    qkv = torch.randn(3, 36, 72, device=DEVICE)
    assert not supported(qkv, 2) and supported(torch.randn(3, 36, 96), 2)
    assert not supported(torch.randn(3, 200, 96), 2)
    assert torch.equal(block_attention(block, qkv, None), block.attention(qkv, None))
    cpu_qkv = torch.randn(3, 36, 96)  # on CPU the kernel is never chosen
    wide = AdaLNBlock(ModelConfig(32, 1, 2, 32, 4, 0.0, 32)).eval()
    assert torch.equal(block_attention(wide, cpu_qkv, None), wide.attention(cpu_qkv, None))


def test_denoiser_with_the_kernel_equals_its_dense_forward() -> None:
    """The sampling forward with the kernel, on the dense batch and on the real rows only,
    gives the dense forward's logits at every real position (fp32)."""
    torch.manual_seed(0)
    model = FastDenoiser(ModelConfig(64, 2, 2, 64, 4, 0.0, 32), RPLAN_VOCAB).eval().to(DEVICE)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    b, s = 12, RPLAN_VOCAB.seq_len
    pad = pad_mask(b, s).to(DEVICE)
    x = torch.randint(0, 13, (b, s), device=DEVICE)
    t = torch.full((), 0.4, device=DEVICE)
    with torch.no_grad():
        dense = model_logits(model, x, pad, t)
        for rows in (None, real_rows(pad)):
            node, edge = model(x, pad, t, real_rows=rows, attention=kernel_attention)
            got = torch.cat([node, F.pad(edge, (0, node.shape[-1] - edge.shape[-1]),
                                         value=-torch.inf)], 1)
            real = pad & torch.isfinite(dense).any(-1)
            # 1e-5 on CPU; on CUDA the near one-hot softmaxes of this model take cuBLAS's
            # and the kernel's float32 rounding to 2e-4 (measured on an H200)
            torch.testing.assert_close(got[real], dense[real], atol=1e-3, rtol=1e-3)
