"""Launch configurations of the ``_compiled`` methods' Triton attention kernel at an RPLAN
batch's shape, timed against SDPA's memory-efficient kernel (how its fixed configuration
was chosen: no autotuning at run time, so every process runs the same kernel).

    python bench/kernel_configs.py        # needs a CUDA device

Shapes: 1000 samples x 36 tokens, the small model (d 128, 4 heads of 32), bf16.
Prints the median time of each configuration (``triton.testing.do_bench``).
"""

from __future__ import annotations

import itertools
import math
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from bdgen.model import short_attention


def main() -> int:
    if not torch.cuda.is_available():
        print("bench/kernel_configs.py needs a CUDA device")
        return 1
    import triton
    from triton.testing import do_bench

    torch.manual_seed(0)
    b, s, heads, head, d = 1000, 36, 4, 32, 128
    dt = torch.bfloat16
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton "
          f"{triton.__version__}; median microseconds")

    qkv = torch.randn(b, s, 3 * d, device="cuda", dtype=dt)
    pad = torch.rand(b, s, device="cuda") > 0.25
    pad[:, 0] = True
    keep = pad.to(torch.uint8)
    q, k, v = qkv.view(b, s, 3, heads, head).permute(2, 0, 3, 1, 4)
    with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION]):
        t = do_bench(lambda: F.scaled_dot_product_attention(q, k, v,
                                                            attn_mask=pad[:, None, None, :]))
    print(f"attention  SDPA memory-efficient                {t * 1e3:7.1f}")
    kernel = short_attention._kernel()
    out = qkv.new_empty(b, s, d)
    for warps, stages in itertools.product((1, 2, 4, 8), (1, 2, 3)):
        def run(warps: int = warps, stages: int = stages) -> None:
            kernel[(b, heads)](qkv, keep, out, s, 1.0 / math.sqrt(head), qkv.stride(0),
                               qkv.stride(1), keep.stride(0), out.stride(0), out.stride(1),
                               HEADS=heads, HEAD=head, BLOCK=64, IEEE=False,
                               num_warps=warps, num_stages=stages)
        print(f"attention  kernel warps {warps} stages {stages}             "
              f"{do_bench(run) * 1e3:7.1f}")

    return 0


if __name__ == "__main__":
    sys.exit(main())
