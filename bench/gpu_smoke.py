"""GPU smoke run (issues 2, 3, 15, 17): the ``_compiled`` methods' Triton attention kernel
against SDPA; train a few steps on CUDA, save, load, resume, compare; sample with and without
the CUDA-graph forward and with the reference loop, and compare the tokens.

    python bench/gpu_smoke.py            # needs a CUDA device

Prints what it checked; exits non-zero on any mismatch. Uses only the science layers and the
training pipeline (no store/MLflow), so it runs on a box that has only torch.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

from bdgen.data.dataset import prepare_synthetic
from bdgen.diffusion.fast_sampling import sample
from bdgen.diffusion.method import Method
from bdgen.diffusion.process import forward_process_of
from bdgen.diffusion.sampler import draw_num_rooms
from bdgen.diffusion.sampler import sample as reference_sample
from bdgen.diffusion.trainer import TrainConfig
from bdgen.model.checkpoint import build_denoiser, load_checkpoint
from bdgen.pipeline.train import train_model


def short_attention_matches_sdpa() -> bool:
    """The Triton kernel of the ``_compiled`` methods against SDPA's math kernel at an
    RPLAN batch's shape (1000 x 36 tokens, 4 heads of 32), PAD keys masked."""
    import torch.nn.functional as F

    from bdgen.model.short_attention import short_attention

    g = torch.Generator("cuda").manual_seed(0)
    pad = torch.rand(1000, 36, device="cuda", generator=g) > 0.25
    pad[:, 0] = True
    ok = True
    for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 2e-2), (torch.float16, 2e-3)):
        qkv = torch.randn(1000, 36, 384, device="cuda", generator=g).to(dtype)
        q, k, v = qkv.float().view(1000, 36, 3, 4, 32).permute(2, 0, 3, 1, 4)
        ref = F.scaled_dot_product_attention(q, k, v, attn_mask=pad[:, None, None, :])
        got = short_attention(qkv, pad[:, None, None, :], 4).float()
        err = (got - ref.transpose(1, 2).reshape(1000, 36, 128)).abs().max().item()
        print(f"short attention {dtype}: max |kernel - SDPA fp32| = {err:.3g} (tol {tol})")
        ok = ok and err <= tol
    return ok


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 1
    if not short_attention_matches_sdpa():
        return 1
    tmp = Path(tempfile.mkdtemp())
    ds = prepare_synthetic(num_graphs=3000, seed=0)
    ds.save(tmp / "ds.pt")
    for version in ("loglinear", "learned"):
        straight = tmp / f"{version}-straight"
        resumed = tmp / f"{version}-resumed"
        cfg = {"batch_size": 64, "warmup_steps": 10, "checkpoint_every": 20, "val_every": 20,
                   "log_every": 10, "is_mode": "off" if version == "learned" else "unbiased"}
        a = train_model(tmp / "ds.pt", noise=version, model="small",
                        config=TrainConfig(steps=40, **cfg), out_dir=straight, device="cuda",
                        progress=False)
        train_model(tmp / "ds.pt", noise=version, model="small",
                    config=TrainConfig(steps=20, **cfg), out_dir=resumed, device="cuda",
                    progress=False)
        b = train_model(tmp / "ds.pt", noise=version, model="small",
                        config=TrainConfig(steps=40, **cfg), out_dir=resumed, device="cuda",
                        resume=True, progress=False)
        ca, cb = load_checkpoint(a.checkpoint), load_checkpoint(b.checkpoint)
        max_diff = max((ca.model_state[k].float() - cb.model_state[k].float()).abs().max().item()
                       for k in ca.model_state)
        net = build_denoiser(ca, device="cuda")
        on_cuda = next(net.parameters()).is_cuda
        print(f"{version}: step {ca.step}, loss {a.final_loss:.4f}, {a.steps_per_s:.1f} steps/s, "
              f"checkpoint reloaded on cuda={on_cuda}, straight-vs-resumed max |dparam| = "
              f"{max_diff:.3g}")
        if not on_cuda or ca.step != 40 or cb.step != 40:
            return 1
        # The sampler's CUDA-graph forward must give the eager forward's tokens exactly.
        process = forward_process_of(ca, torch.device("cuda"))
        rooms = draw_num_rooms(ca.num_rooms_distribution, 500, 0)
        for name in ("llada_topp0.9_remdm_confidence_tsw1.0", "random_topp0.9_no_remask",
                     "random_topp0.9_remdm_cap_eta0.4_bf16"):
            m = Method.parse(("v2_" if version == "learned" else "") + name)
            graphed, eager = (sample(net, process, ca.vocab, rooms, m, 50, 7, "cuda",
                                     cuda_graphs=g).tokens for g in (True, False))
            same = torch.equal(graphed, eager)
            print(f"{version}: {m.format()}: CUDA-graph tokens identical to eager: {same}")
            # The reference loop (bdgen.diffusion.sampler: no early stop, whole batch, no
            # graph) must give the fast sampler's tokens on CUDA too.
            ref = reference_sample(net, process, ca.vocab, rooms, m, 50, 7, "cuda").tokens
            same_ref = torch.equal(ref, eager)
            print(f"{version}: {m.format()}: reference-loop tokens identical to fast: "
                  f"{same_ref}")
            if not (same and same_ref):
                return 1
        # torch.compile with CUDA graphs must train the same objective: compare the
        # validation after 200 steps with the eager run (not bitwise: other kernels).
        vals = {}
        for mode in ("eager", "reduce-overhead"):
            c = TrainConfig(steps=200, **{**cfg, "val_every": 200, "checkpoint_every": 1000},
                            compile=mode != "eager",
                            compile_mode="reduce-overhead" if mode != "eager" else "default")
            out = train_model(tmp / "ds.pt", noise=version, model="small", config=c,
                              out_dir=tmp / f"{version}-{mode}", device="cuda", progress=False)
            vals[mode] = out.val
        e, r = vals["eager"], vals["reduce-overhead"]
        print(f"{version}: 200 steps, val loss eager {e.loss:.4f} vs compiled (CUDA graphs) "
              f"{r.loss:.4f}; edge acc {e.edge_accuracy:.3f} vs {r.edge_accuracy:.3f}")
        if abs(e.loss - r.loss) > 0.1 * abs(e.loss):
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
