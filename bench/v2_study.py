"""v1 vs v2 study on the built-in synthetic dataset (issue 5), in one resumable command.

    # the real study (GPU):
    .venv/bin/python bench/v2_study.py --device cuda --steps 20000 --out runs/v2_study
    # a small CPU smoke run:
    .venv/bin/python bench/v2_study.py --device cpu --steps 200 --model tiny \
        --samples 100 --num-graphs 3000 --out /tmp/v2_study_small

Stages (each skipped when its output already exists under ``--out``, so the same command can
be re-run after an interruption or a ``--time-budget`` stop and continues where it was):

1. prepare the synthetic dataset (``dataset.pt``);
2. train v1 (log-linear schedule + importance sampling, ``--v1-is-mode``, legacy by default)
   and v2 (rate network, STGS, per-position ELBO, uniform t) with the same budget: steps,
   batch size, model, lr, warm-up, seed. Training state is saved every
   ``--checkpoint-every`` steps (``<v>/resume.pt``, exact resumption) and the final model as
   a regular bdgen checkpoint (``<v>/checkpoint.pt``, usable by ``bdgen generate``);
3. generate ``llada_topp0.9_no_remask`` and ``llada_topp0.9_remdm_confidence_tsw1.0`` for
   both (``v2_`` prefix for v2), ``--samples`` per seed, ``--seeds``, N = ``--sample-steps``;
   samples files under ``samples/``;
4. evaluate every seed against the train split (the full metric suite), aggregate mean ±
   population std over seeds, write ``results.json`` and print the table.

With ``--time-budget S`` the script stops cleanly (after saving state) once S seconds have
passed, exiting with status 3; run the same command again to continue.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

METHODS = ("llada_topp0.9_no_remask", "llada_topp0.9_remdm_confidence_tsw1.0")
TABLE = (  # (legacy per-seed key, header, scale, decimals)
    ("eval/validity_rate", "Valid.%", 100, 1),
    ("eval/inside_validity", "Inside%", 100, 1),
    ("eval/edge_js", "Edge JS", 1, 3),
    ("eval/node_tv", "Node TV", 1, 3),
    ("eval/mode_coverage_weighted", "MC(wt)%", 100, 1),
    ("eval/num_sample_modes", "Arch.", 1, 1),
    ("eval/diversity", "Div.", 1, 3),
    ("eval/novelty", "Nov.", 1, 3),
)


class OutOfTime(Exception):
    pass


def _atomic_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "wb") as fh:
        torch.save(obj, fh)
    os.replace(tmp, path)


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="v1 vs v2 study on the synthetic dataset")
    ap.add_argument("--out", default="runs/v2_study")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=20000, help="training steps per model")
    ap.add_argument("--model", default="small", help="denoiser preset")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--v1-is-mode", default="legacy",
                    choices=("legacy", "uncorrected", "unbiased", "off"),
                    help="v1 importance sampling (legacy = the spec's recorded v1 objective)")
    ap.add_argument("--num-graphs", type=int, default=None, help="synthetic set size")
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--seed", type=int, default=42, help="training seed (= split seed)")
    ap.add_argument("--samples", type=int, default=1000, help="samples per seed")
    ap.add_argument("--seeds", default="42,123,456")
    ap.add_argument("--sample-steps", type=int, default=100)
    ap.add_argument("--sample-batch", type=int, default=None,
                    help="generation batch (default 1000 on CUDA, 250 on CPU)")
    ap.add_argument("--checkpoint-every", type=int, default=2000)
    ap.add_argument("--time-budget", type=float, default=None, help="seconds, then stop (rc 3)")
    ap.add_argument("--versions", default="v1,v2")
    args = ap.parse_args(argv)

    deadline = None if args.time_budget is None else time.monotonic() + args.time_budget
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    seeds = [int(s) for s in args.seeds.split(",")]
    versions = [v for v in args.versions.split(",") if v]
    sample_batch = args.sample_batch or (1000 if device.type == "cuda" else 250)
    try:
        ds = stage_data(out, args)
        for version in versions:
            stage_train(out, ds, version, args, device, deadline)
        for version in versions:
            stage_generate(out, ds, version, args, device, seeds, sample_batch, deadline)
        results = stage_evaluate(out, ds, versions, seeds, args)
    except OutOfTime as exc:
        _log(f"time budget reached ({exc}); state saved, run the same command again")
        return 3
    print_table(results, versions, seeds, args)
    return 0


# -- 1. data ---------------------------------------------------------------------------------
def stage_data(out: Path, args):
    from bdgen.data.dataset import PreparedDataset, prepare_synthetic

    path = out / "dataset.pt"
    if path.exists():
        return PreparedDataset.load(path)
    _log("preparing the synthetic dataset")
    ds = prepare_synthetic(args.num_graphs, seed=args.data_seed)
    ds.save(path)
    _log(f"dataset {ds.dataset_id}: {len(ds)} graphs")
    return ds


# -- 2. training -----------------------------------------------------------------------------
def _train_config(version: str, args):
    from bdgen.diffusion.trainer import TrainConfig

    return TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                       warmup_steps=min(args.warmup, max(args.steps // 10, 1)),
                       is_mode=args.v1_is_mode if version == "v1" else "off", seed=args.seed,
                       checkpoint_every=args.checkpoint_every, val_every=args.steps,
                       log_every=100)


def stage_train(out: Path, ds, version: str, args, device: torch.device, deadline) -> None:
    from bdgen.diffusion.objective import (
        FixedScheduleObjective,
        LearnedRatesObjective,
        LearnedRatesSettings,
    )
    from bdgen.diffusion.rate_network import RateNetwork
    from bdgen.diffusion.schedules import make_schedule
    from bdgen.diffusion.trainer import Trainer, seed_everything
    from bdgen.model.checkpoint import Checkpoint, save_checkpoint
    from bdgen.model.denoiser import model_preset
    from bdgen.model.fast_forward import FastDenoiser

    final = out / version / "checkpoint.pt"
    if final.exists():
        return
    cfg = _train_config(version, args)
    seed_everything(cfg.seed)
    split = {"seed": args.seed, "fractions": [0.8, 0.1, 0.1]}
    train, val = ds.split("train", args.seed), ds.split("val", args.seed)
    stats = ds.train_stats(args.seed)
    model = FastDenoiser(model_preset(args.model), ds.vocab)
    noise = {"type": "loglinear", "eps": 1e-3}
    if version == "v1":
        objective = FixedScheduleObjective(make_schedule(noise), stats.edge_class_weights,
                                           cfg.is_mode)
    else:
        rate = RateNetwork(vocab=ds.vocab)
        v2 = LearnedRatesSettings()
        noise = {"type": "learned", **rate.config.to_dict(), **v2.to_dict()}
        objective = LearnedRatesObjective(rate, stats.edge_class_weights, v2)
    trainer = Trainer(model, objective, train.tokens, train.pad_mask, cfg, device, val.tokens,
                      val.pad_mask)
    resume = out / version / "resume.pt"
    if resume.exists():
        trainer.load_state_dict(torch.load(resume, map_location="cpu", weights_only=False))
        _log(f"{version}: resumed at step {trainer.step}")
    _log(f"{version}: training {cfg.steps} steps (model {args.model}, batch {cfg.batch_size}, "
         f"{'is_mode ' + cfg.is_mode if version == 'v1' else 'uniform t, STGS'}) on {device}")
    t0, s0 = time.perf_counter(), trainer.step
    acc, window = torch.zeros((), device=device), 0
    model.train()
    while trainer.step < cfg.steps:
        acc += trainer.train_step()
        window += 1
        if trainer.step % 500 == 0 or trainer.step == cfg.steps:
            rate_s = (trainer.step - s0) / (time.perf_counter() - t0)
            tau = "".join(f", tau {v:.3f}" for v in
                          trainer.objective.log_fields(trainer.step, cfg.steps).values())
            _log(f"{version}: step {trainer.step}/{cfg.steps}, loss {acc.item() / window:.4f}"
                 f"{tau}, {rate_s:.1f} steps/s")
            acc.zero_()
            window = 0
        stop = deadline is not None and time.monotonic() > deadline
        if trainer.step % cfg.checkpoint_every == 0 or (stop and trainer.step < cfg.steps):
            _atomic_save(trainer.state_dict(), resume)
        if stop and trainer.step < cfg.steps:
            raise OutOfTime(f"{version} training at step {trainer.step}")
    val_res = trainer.validate()
    _log(f"{version}: val loss {val_res.loss:.4f}, node acc {val_res.node_accuracy:.3f}, "
         f"edge acc {val_res.edge_accuracy:.3f}")
    state = trainer.state_dict()
    rate_net = getattr(trainer.objective, "rate_network", None)
    ckpt = Checkpoint(
        version=version, model_config=model.config.to_dict(), n_max=ds.vocab.n_max,
        noise=noise, train_config={**cfg.to_dict(), "model": args.model},
        dataset_hash=ds.dataset_hash, dataset_id=ds.dataset_id, split=split,
        num_rooms_distribution=stats.num_rooms_distribution,
        edge_class_weights=stats.edge_class_weights, step=trainer.step,
        model_state=state["model"],
        rate_network_state=state.get("rate_network"),
        rate_network_config=rate_net.config.to_dict() if rate_net is not None else None)
    save_checkpoint(ckpt, final)
    (out / version / "train.json").write_text(json.dumps({
        "steps": trainer.step, "val_loss": val_res.loss, "val_node_acc": val_res.node_accuracy,
        "val_edge_acc": val_res.edge_accuracy,
        "steps_per_s_last_session": (trainer.step - s0) / (time.perf_counter() - t0)}, indent=1))
    if resume.exists():
        resume.unlink()


# -- 3. generation ---------------------------------------------------------------------------
def _method_name(version: str, base: str) -> str:
    return f"v2_{base}" if version == "v2" else base


def _samples_path(out: Path, version: str, method: str, seed: int) -> Path:
    return out / "samples" / version / method / f"seed-{seed}.pt"


def stage_generate(out: Path, ds, version: str, args, device, seeds, batch, deadline) -> None:
    from bdgen.diffusion.fast_sampling import sample
    from bdgen.diffusion.method import Method
    from bdgen.diffusion.process import forward_process_of
    from bdgen.diffusion.sampler import draw_num_rooms
    from bdgen.model.checkpoint import build_denoiser, load_checkpoint

    ckpt = load_checkpoint(out / version / "checkpoint.pt", map_location="cpu")
    model = process = None
    for base in METHODS:
        name = _method_name(version, base)
        method = Method.parse(name)
        for seed in seeds:
            path = _samples_path(out, version, name, seed)
            if path.exists():
                continue
            if deadline is not None and time.monotonic() > deadline:
                raise OutOfTime(f"before generating {name} seed {seed}")
            if model is None:
                model = build_denoiser(ckpt, device)
                process = forward_process_of(ckpt, device)
            rooms = draw_num_rooms(ckpt.num_rooms_distribution, args.samples, seed)
            t0 = time.perf_counter()
            res = sample(model, process, ds.vocab, rooms, method, args.sample_steps, seed,
                         device, batch)
            wall = time.perf_counter() - t0
            _atomic_save({"tokens": res.tokens, "pad_mask": res.pad_mask,
                          "num_rooms": res.num_rooms, "method": name, "seed": seed,
                          "wall_s": wall, "model_calls": res.model_calls}, path)
            _log(f"{name} seed {seed}: {args.samples} samples in {wall:.1f} s "
                 f"({args.samples / wall:.1f}/s)")


# -- 4. evaluation ---------------------------------------------------------------------------
def stage_evaluate(out: Path, ds, versions, seeds, args) -> dict:
    from bdgen.eval.aggregate import aggregate_seeds
    from bdgen.eval.reference import ReferenceStats
    from bdgen.eval.suite import evaluate_seed

    train = ds.split("train", args.seed)
    ref = ReferenceStats.build(train.tokens.numpy(), train.pad_mask.numpy(), ds.vocab)
    results: dict = {}
    for version in versions:
        for base in METHODS:
            name = _method_name(version, base)
            per_seed = {}
            for seed in seeds:
                s = torch.load(_samples_path(out, version, name, seed), weights_only=True)
                per_seed[str(seed)] = evaluate_seed(s["tokens"].numpy(), s["pad_mask"].numpy(),
                                                    ref)
            agg = aggregate_seeds(per_seed)
            results[name] = {k: {"mean": a.mean, "std": a.std, "n": a.n}
                             for k, a in agg.items() if k.startswith("eval/")}
    for version in versions:
        p = out / version / "train.json"
        if p.exists():
            results[f"{version}_training"] = json.loads(p.read_text())
    (out / "results.json").write_text(json.dumps(results, indent=1))
    return results


def print_table(results: dict, versions, seeds, args) -> None:
    print(f"\nv1 vs v2 on the synthetic dataset: {args.steps} training steps each "
          f"(model {args.model}, batch {args.batch_size}), {args.samples} samples x "
          f"{len(seeds)} seeds, N = {args.sample_steps}; mean ± population std")
    head = f"| {'method':45} | " + " | ".join(h for _, h, _, _ in TABLE) + " |"
    print(head)
    print("|" + "---|" * (len(TABLE) + 1))
    for version in versions:
        for base in METHODS:
            name = _method_name(version, base)
            cells = []
            for key, _, scale, dec in TABLE:
                m = results[name][key]
                cells.append(f"{m['mean'] * scale:.{dec}f}±{m['std'] * scale:.{dec}f}")
            print(f"| {name:45} | " + " | ".join(cells) + " |")
    if {"v1", "v2"} <= set(versions):
        for base in METHODS:
            a = results[base]["eval/edge_js"]["mean"]
            b = results[f"v2_{base}"]["eval/edge_js"]["mean"]
            ma = results[base]["eval/num_sample_modes"]["mean"]
            mb = results[f"v2_{base}"]["eval/num_sample_modes"]["mean"]
            ratio = a / b if b > 0 else float("inf")
            print(f"{base}: edge JS v1/v2 = {ratio:.2f}x; archetypes v1 {ma:.1f} vs v2 {mb:.1f}")
    for version in versions:
        t = results.get(f"{version}_training")
        if t:
            print(f"{version} training: val loss {t['val_loss']:.4f}, node acc "
                  f"{t['val_node_acc']:.3f}, edge acc {t['val_edge_acc']:.3f}")


if __name__ == "__main__":
    sys.exit(main())
