"""Bit-identity of samples and logits between the code of a git commit and this tree.

    python bench/equivalence.py [--base c8220b9] [--num-samples 64] [--steps 20]

Checks the base commit out once (``git worktree add --detach /tmp/eq-base-<commit>``), then
runs this file's ``--emit`` mode twice in fresh interpreters, with ``PYTHONPATH`` pointing at
the base worktree and at this tree, and prints the sha256 of each figure side by side:

* samples (tokens) of a handful of methods, fixed schedule (v1) and learned rates (v2), on a
  tiny randomly perturbed model on CPU, with the production (fast) sampler and, where the
  tree has one, the reference loop;
* the denoiser's logits in eval mode (one shared t, per-row t) and in training mode (same
  RNG seed, dropout 0.1), and the gradients of a training-mode loss;
* the weights after 8 training steps (fixed schedule with two importance-sampling modes,
  learned rates);
* samples from v1 and v2 checkpoints that the base tree trained and saved with its
  pipeline, loaded by each tree (old checkpoints load and sample the same).

Only public names that exist in both trees are used (the emit mode tries the new module
names first and falls back to the old ones).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("random_argmax_no_remask", "llada_topp0.9_no_remask", "random_temp0.8_no_remask",
           "llada_topp0.9_remdm_confidence_tsw0.5", "random_topp0.9_remdm_cap_eta0.4",
           "llada_topp1.0_remdm_rescale_eta0.5_tsw0.7", "v2_llada_topp0.9_remdm_confidence_tsw1.0",
           "v2_random_topp0.9_remdm_cap_eta0.2", "v2_random_argmax_no_remask")
ROOMS = [0.0, 0.0, 0.0, 0.003, 0.072, 0.311, 0.362, 0.252]


def _sha(t) -> str:
    import torch

    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bool:
        t = t.to(torch.uint8)
    return hashlib.sha256(t.numpy().tobytes()).hexdigest()[:16]


def _imports():
    """(production model class, fast sample, reference sample or None, v2 process class)."""
    try:
        from bdgen.model.fast_forward import FastDenoiser as Model
    except ImportError:
        from bdgen.model.denoiser import BDDenoiser as Model
    try:
        from bdgen.diffusion.fast_sampling import sample as fast
        from bdgen.diffusion.sampler import sample as reference
    except ImportError:
        from bdgen.diffusion.sampler import sample as fast
        reference = None
    try:
        from bdgen.diffusion.process import RateNetworkProcess
    except ImportError:
        from bdgen.diffusion.process_v2 import RateNetworkProcess
    return Model, fast, reference, RateNetworkProcess


def emit(args) -> dict[str, str]:
    import torch

    from bdgen.data.vocab import RPLAN_VOCAB
    from bdgen.diffusion.method import Method
    from bdgen.diffusion.process import ScheduleProcess
    from bdgen.diffusion.rate_network import RateNetwork
    from bdgen.diffusion.sampler import draw_num_rooms
    from bdgen.diffusion.schedules import make_schedule
    from bdgen.model.denoiser import MODEL_PRESETS

    torch.set_num_threads(1)
    model_cls, fast, reference, rate_process = _imports()
    vocab = RPLAN_VOCAB
    cfg = dataclasses.replace(MODEL_PRESETS["tiny"], dropout=0.1)
    torch.manual_seed(0)
    model = model_cls(cfg, vocab)
    rate = RateNetwork(vocab=vocab)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in [*model.parameters(), *rate.parameters()]:
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
    model.eval()
    rate.eval()
    v1 = ScheduleProcess(make_schedule("loglinear"))
    v2 = rate_process(rate)
    rooms = draw_num_rooms(ROOMS, args.num_samples, 7)
    out: dict[str, str] = {}
    for name in METHODS:
        method = Method.parse(name)
        proc = v2 if name.startswith("v2_") else v1
        s = fast(model, proc, vocab, rooms, method, args.steps, 11, batch_size=24)
        out[f"samples {name}"] = _sha(s.tokens)
        if reference is not None:
            r = reference(model, proc, vocab, rooms, method, args.steps, 11, batch_size=24)
            out[f"samples {name} (reference loop)"] = _sha(r.tokens)
    # logits: mixed room counts, out of order
    n = 12
    num_rooms = torch.tensor([3, 8, 5, 5, 1, 8, 6, 2, 7, 4, 6, 3])[:n]
    pad = torch.from_numpy(vocab.pad_mask_table)[num_rooms]
    tok = torch.randint(0, 13, (n, vocab.seq_len), generator=g)
    tok[:, vocab.n_max:] = tok[:, vocab.n_max:] % 11
    with torch.no_grad():
        for label, t in (("shared t", torch.tensor(0.37)),
                         ("per-row t", torch.linspace(0.05, 0.95, n))):
            node, edge = model(tok, pad, t)
            out[f"logits eval {label}"] = _sha(torch.cat([node.flatten(), edge.flatten()]))
    model.train()
    torch.manual_seed(5)
    node, edge = model(tok, pad, torch.linspace(0.05, 0.95, n))
    out["logits train (dropout 0.1)"] = _sha(torch.cat([node.flatten(), edge.flatten()]))
    loss = node[pad[:, :vocab.n_max]][:, :13].square().mean() \
        + edge[pad[:, vocab.n_max:]][:, :11].square().mean()
    loss.backward()
    out["gradients train"] = _sha(torch.cat([p.grad.flatten() for p in model.parameters()]))
    for version in ("v1 is_mode unbiased", "v1 is_mode off", "v2"):
        out[f"trained weights {version}"] = _train(version, model_cls)
    out.update(_checkpoints(args.checkpoints, fast))
    return out


def _checkpoints(folder: str, fast) -> dict[str, str]:
    """Train tiny v1 and v2 checkpoints with the pipeline (first call, by the base tree),
    then load each and sample from it: old checkpoints must load and sample the same."""
    import torch

    from bdgen.data.dataset import prepare_synthetic
    from bdgen.diffusion.method import Method
    from bdgen.diffusion.sampler import draw_num_rooms
    from bdgen.diffusion.trainer import TrainConfig
    from bdgen.model.checkpoint import build_denoiser, load_checkpoint
    from bdgen.pipeline.train import train_model

    try:
        from bdgen.diffusion.process import forward_process_of
    except ImportError:
        from bdgen.pipeline.generate import process_for as forward_process_of
    root = Path(folder)
    out = {}
    for noise in ("loglinear", "learned"):
        path = root / noise / "checkpoint_final.pt"
        cfg = TrainConfig(steps=6, batch_size=16, warmup_steps=2, log_every=3,
                          checkpoint_every=100, val_every=100,
                          is_mode="off" if noise == "learned" else "unbiased")
        if not (root / "ds.pt").exists():
            prepare_synthetic(200, seed=0).save(root / "ds.pt")
        if not path.exists():
            train_model(root / "ds.pt", noise=noise, model="tiny", config=cfg,
                        out_dir=root / noise, device="cpu", progress=False)
        own = root / f"own-{os.getpid()}" / noise   # this tree's pipeline, same settings
        train_model(root / "ds.pt", noise=noise, model="tiny", config=cfg, out_dir=own,
                    device="cpu", progress=False)
        mine = load_checkpoint(own / "checkpoint_final.pt")
        states = [mine.model_state, mine.rate_network_state or {}]
        out[f"pipeline-trained checkpoint {noise}: weights"] = _sha(torch.cat(
            [v.flatten().double() for st in states for _, v in sorted(st.items())]))
        ckpt = load_checkpoint(path)
        model = build_denoiser(ckpt)
        process = forward_process_of(ckpt, torch.device("cpu"))
        rooms = draw_num_rooms(ckpt.num_rooms_distribution, 32, 3)
        prefix = "v2_" if ckpt.version == "v2" else ""
        for name in ("llada_topp0.9_remdm_confidence_tsw1.0", "random_topp0.9_remdm_cap_eta0.4"):
            s = fast(model, process, ckpt.vocab, rooms, Method.parse(prefix + name), 12, 5)
            out[f"base-tree checkpoint {noise}: samples {prefix + name}"] = _sha(s.tokens)
    return out


def _train(version: str, model_cls) -> str:
    """Parameters after 8 steps of training (dropout 0.1) with the production trainer."""
    import torch

    from bdgen.data.dataset import prepare_synthetic
    from bdgen.diffusion.rate_network import RateNetwork
    from bdgen.diffusion.schedules import make_schedule
    from bdgen.diffusion.trainer import TrainConfig, Trainer
    from bdgen.model.denoiser import MODEL_PRESETS

    ds = prepare_synthetic(120, seed=0)
    train, stats = ds.split("train"), ds.train_stats()
    torch.manual_seed(1)
    model = model_cls(dataclasses.replace(MODEL_PRESETS["tiny"], dropout=0.1), ds.vocab)
    mode = "off" if version != "v1 is_mode unbiased" else "unbiased"
    cfg = TrainConfig(steps=8, batch_size=16, warmup_steps=2, is_mode=mode, log_every=4,
                      checkpoint_every=100, val_every=100, seed=1)
    weights = stats.edge_class_weights
    try:
        from bdgen.diffusion.objective import FixedScheduleObjective, LearnedRatesObjective

        objective = (LearnedRatesObjective(RateNetwork(vocab=ds.vocab), weights)
                     if version == "v2" else
                     FixedScheduleObjective(make_schedule("loglinear"), weights, mode))
        trainer = Trainer(model, objective, train.tokens, train.pad_mask, cfg)
    except ImportError:
        if version == "v2":
            from bdgen.diffusion.trainer_v2 import TrainerV2

            trainer = TrainerV2(model, RateNetwork(vocab=ds.vocab), train.tokens,
                                train.pad_mask, weights, cfg)
        else:
            trainer = Trainer(model, make_schedule("loglinear"), train.tokens, train.pad_mask,
                              weights, cfg)
    trainer.run(progress=False)
    return _sha(torch.cat([p.detach().flatten() for p in trainer.parameters()]))


def run_tree(tree: Path, args) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--emit",
           "--num-samples", str(args.num_samples), "--steps", str(args.steps),
           "--checkpoints", args.checkpoints]
    res = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True)
    if res.returncode:
        sys.exit(f"emit failed in {tree}:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="c8220b9", help="git commit to compare with")
    ap.add_argument("--num-samples", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--emit", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--checkpoints", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.emit:
        print(json.dumps(emit(args)))
        return
    base = Path(f"/tmp/eq-base-{args.base}")
    if not base.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base),
                        args.base], check=True, capture_output=True)
    with tempfile.TemporaryDirectory() as tmp:
        args.checkpoints = tmp  # written by the base tree, read by both
        old, new = run_tree(base, args), run_tree(ROOT, args)
    same = True
    print(f"{'figure':66s} {'base ' + args.base:18s} {'this tree':18s} equal")
    for key, value in new.items():
        ref = old.get(key) or old.get(key.replace(" (reference loop)", ""))
        ok = ref == value
        same &= ok
        print(f"{key:66s} {ref or '-':18s} {value:18s} {'yes' if ok else 'NO'}")
    print("ALL BIT-IDENTICAL" if same else "DIFFERENCES FOUND")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
