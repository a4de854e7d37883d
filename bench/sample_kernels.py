"""Where a bf16 sampling run's GPU time can go: kernel variants of the same method, side by
side in one process (issue 17.4, the 0.1 s aim).

    python bench/sample_kernels.py            # needs a CUDA device; ~2.5 min on an H200

For ``llada_topp0.9_remdm_confidence_tsw1.0_bf16``, 1000 samples x 100 steps, the small random
model of ``bench/sample.py`` with the sampler's CUDA-graph forward, it times (third of three
calls; the first, with compilation and capture, in brackets) and compares the tokens with
today's eager bf16 path:

* today's path (autocast bf16, ``F.scaled_dot_product_attention`` as torch picks it: cuDNN
  flash attention on an H200);
* SDPA forced to the math or the memory-efficient backend;
* attention written out as two batched matmuls around a float32 softmax;
* ``torch.compile`` of the denoiser (default mode) with each attention.

None of these is a bdgen code path. Their tokens differ from today's in 0.01-2 % of the
positions (other kernels round differently), so a path adopted from here must get its own
method-name suffix, as ``_bf16`` and ``_tf32`` have. The last table is torch.profiler's top
GPU kernels of the compiled run with the written-out attention.
"""
from __future__ import annotations

import copy
import math
import sys
import traceback
import types
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _sampling import random_model, timed  # noqa: E402

from bdgen.diffusion.fast_sampling import sample  # noqa: E402
from bdgen.diffusion.method import Method  # noqa: E402
from bdgen.diffusion.sampler import draw_num_rooms  # noqa: E402

if not torch.cuda.is_available():
    sys.exit("bench/sample_kernels.py needs a CUDA device")
dev = torch.device("cuda")
model, process, vocab, dist = random_model("small", dev)
rooms = draw_num_rooms(dist, 1000, 42)
M = Method.parse("llada_topp0.9_remdm_confidence_tsw1.0_bf16")


def math_attention(self, qkv, key_mask):
    b, s, d3 = qkv.shape
    d = d3 // 3
    q, k, v = qkv.view(b, s, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
    scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask, float("-inf"))
    attn = scores.float().softmax(-1).to(v.dtype) @ v
    return attn.transpose(1, 2).reshape(b, s, d)


def run(name, mdl, ctx=None, method=M, graphs=True):
    try:
        outs = []
        for _ in range(3):
            if ctx is not None:
                with ctx():
                    o, dt = timed(lambda: sample(mdl, process, vocab, rooms, method, 100, 42, dev,
                                                 cuda_graphs=graphs), dev)
            else:
                o, dt = timed(lambda: sample(mdl, process, vocab, rooms, method, 100, 42, dev,
                                             cuda_graphs=graphs), dev)
            outs.append((o, dt))
        o, dt = outs[-1]
        agree = (o.tokens == base.tokens).float().mean().item() if base is not None else 1.0
        RESULTS.append(f"{name:45s} {dt * 1000:7.1f} ms  (first {outs[0][1] * 1000:7.1f} ms)"
                       f"  token agreement with eager bf16 {agree:.4f}")
        return o
    except Exception as e:  # noqa: BLE001 - a variant torch cannot run is reported, not fatal
        RESULTS.append(f"{name:45s} FAILED {type(e).__name__}: {str(e)[:200]}")
        traceback.print_exc(limit=3)
        return None


RESULTS: list[str] = []


def with_math_attention(mdl):
    m = copy.deepcopy(mdl)
    for block in m.blocks:
        block.attention = types.MethodType(math_attention, block)
    return m


base = None
base = run("eager bf16 + forward graph (now)", model)
run("sdpa MATH backend", model, lambda: sdpa_kernel(SDPBackend.MATH))
run("sdpa EFFICIENT backend", model, lambda: sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION))
run("explicit math attention (bmm), eager", with_math_attention(model))
run("compile default + forward graph", torch.compile(copy.deepcopy(model)))
cm2 = torch.compile(with_math_attention(model))
run("compile + explicit math attention", cm2)
run("compile + sdpa EFFICIENT", torch.compile(copy.deepcopy(model)),
    lambda: sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION))
with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
    sample(cm2, process, vocab, rooms, M, 100, 42, dev, cuda_graphs=True)
print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=12))
print("\n".join(RESULTS))
