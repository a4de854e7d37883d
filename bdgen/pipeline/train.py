"""``bdgen train``: load a prepared dataset, train, write checkpoints atomically, resume.

The trainer (:class:`~bdgen.diffusion.trainer.Trainer`) optimises the objective of the noise
config (:func:`~bdgen.diffusion.objective.objective_for`): a fixed schedule (v1), or with
``--noise learned`` learned rates (v2, spec §4.4: denoiser and rate network jointly). A v2
checkpoint has ``version="v2"``, ``noise = {"type": "learned", <rate-network
hyper-parameters>, <LearnedRatesSettings>}`` and carries
``rate_network_state`` / ``rate_network_config``.

Where checkpoints go: a model's id depends on the final checkpoint's sha256, which is not
known while training, so a run writes into a *run directory* derived from what determines
its trajectory::

    <workspace>/artifacts/models/<run-name>/
    run-name = <v1|v2>-<noise>-<dataset_hash[:8]>-<config_hash[:8]>

where ``config_hash`` covers the model config, noise config, split and the trajectory
fields of :class:`TrainConfig` (batch, lr, weight decay, warm-up, clip, IS mode, seed, and
precision when it is bf16) but
not the step count, so ``--resume --steps <more>`` finds the same directory. ``--out DIR``
overrides it. Files: ``checkpoint_step_<step>.pt`` every N steps, ``checkpoint_final.pt``
at the end, ``train_log.jsonl`` (one line per validation).

The split seed is fixed (42, spec §1.7) and independent of the training seed: the legacy
quirk of re-splitting with the training seed is not reproduced.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from bdgen.diffusion.objective import model_version_of, noise_config, objective_for
from bdgen.diffusion.trainer import (
    TrainConfig,
    Trainer,
    ValResult,
    seed_everything,
    trajectory_of,
)
from bdgen.errors import BdgenError
from bdgen.model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from bdgen.model.denoiser import BDDenoiser, model_preset
from bdgen.model.fast_forward import FastDenoiser
from bdgen.pipeline.progress import StepProgress, on_terminal
from bdgen.pipeline.workspace import Workspace
from bdgen.util.device import resolve_device
from bdgen.util.faults import fault_point
from bdgen.util.hashing import config_hash

SPLIT_SEED = 42
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
FINAL_NAME = "checkpoint_final.pt"
_STEP_RE = re.compile(r"checkpoint_step_(\d+)\.pt$")


@dataclass
class TrainOutcome:
    checkpoint: Path          # checkpoint_final.pt
    run_dir: Path
    step: int
    final_loss: float
    steps_per_s: float
    wall_s: float
    resumed_from: int         # 0 for a fresh run
    val: ValResult | None
    already_finished: bool = False   # --resume of a finished run: nothing was done


def run_name(noise: dict, dataset_hash: str, model_config: dict, config: TrainConfig,
             split: dict) -> str:
    ident = {"model": model_config, "noise": noise, "train": config.trajectory(),
             "split": split}
    return f"{model_version_of(noise)}-{noise['type']}-{dataset_hash[:8]}-{config_hash(ident)[:8]}"


def make_trainer(noise: dict, net: BDDenoiser, train, val, stats, config: TrainConfig,
                 device: torch.device) -> Trainer:
    """The trainer of the noise config's objective (a fresh rate network for learned rates)."""
    objective = objective_for(noise, net.vocab, stats.edge_class_weights, config.is_mode)
    return Trainer(net, objective, train.tokens, train.pad_mask, config, device,
                   val_tokens=val.tokens if len(val) else None,
                   val_pad_mask=val.pad_mask if len(val) else None)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint with the highest step in ``run_dir`` (final wins ties)."""
    best: tuple[int, int, Path] | None = None
    for path in run_dir.glob("checkpoint_*.pt"):
        m = _STEP_RE.search(path.name)
        if m:
            key = (int(m.group(1)), 0, path)
        elif path.name == FINAL_NAME:
            key = (load_checkpoint(path).step, 1, path)
        else:
            continue
        if best is None or key[:2] > best[:2]:
            best = key
    return None if best is None else best[2]


def finished_step(run_dir: Path, steps: int) -> int | None:
    """The step of ``run_dir``'s final checkpoint when it is at least ``steps`` (the run is
    finished: resuming it has nothing to do), else None."""
    final = run_dir / FINAL_NAME
    if not final.is_file():
        return None
    latest = latest_checkpoint(run_dir)
    if latest != final:  # a later step checkpoint: the run was resumed past its final
        return None
    step = load_checkpoint(final).step
    return step if step >= steps else None


def _check_same_run(ckpt: Checkpoint, path: Path, expected: dict) -> None:
    """Resuming continues one trajectory: everything that shapes it must match."""
    found = {"dataset_hash": ckpt.dataset_hash, "model_config": ckpt.model_config,
             "noise": ckpt.noise, "split": ckpt.split,
             "trajectory": trajectory_of(ckpt.train_config)}
    for key, value in expected.items():
        if found[key] != value:
            raise BdgenError(f"cannot resume from {path}: its {key} {found[key]} differs "
                             f"from this run's {value}")


def train_model(dataset_path: str | Path, noise: str = "loglinear", model: str = "small",
                config: TrainConfig | None = None, out_dir: str | Path | None = None,
                resume: bool = False, device: str = "auto", progress: bool = True,
                on_metrics: Callable[[dict], None] | None = None,
                on_checkpoint_saved: Callable[[int], None] | None = None,
                heartbeat: bool = True) -> TrainOutcome:
    """Train (or resume) a v1 or v2 (``noise="learned"``) model on a prepared dataset;
    returns where the final checkpoint is and the run's figures.

    ``on_metrics(row)`` receives every ``train_log.jsonl`` row as it is written (``step``
    plus training-loss or validation fields): live tracking and progress lines.
    ``on_checkpoint_saved(step)`` is called once each checkpoint (the final one included)
    is on disk: what a resume would continue from. ``heartbeat=False``: no progress lines
    of its own without a terminal (the tracked job prints a richer one: losses, ETA)."""
    from bdgen.data.dataset import PreparedDataset

    config = config or TrainConfig()
    noise_cfg = noise_config(noise)
    model_cfg = model_preset(model)
    dev = resolve_device(device)
    ds = PreparedDataset.load(dataset_path)
    split = {"seed": SPLIT_SEED, "fractions": list(SPLIT_FRACTIONS)}
    train = ds.split("train", seed=SPLIT_SEED, fractions=SPLIT_FRACTIONS)
    val = ds.split("val", seed=SPLIT_SEED, fractions=SPLIT_FRACTIONS)
    stats = ds.train_stats(seed=SPLIT_SEED, fractions=SPLIT_FRACTIONS)

    name = run_name(noise_cfg, ds.dataset_hash, model_cfg.to_dict(), config, split)
    run_dir = Path(out_dir) if out_dir is not None else Workspace.find().model_dir(name)
    existing = latest_checkpoint(run_dir) if run_dir.is_dir() else None
    if existing is not None and not resume:
        raise BdgenError(f"{run_dir} already holds checkpoints; pass --resume to continue "
                         "that run or choose another --out")
    if resume and existing is None:
        raise BdgenError(f"--resume: no checkpoint to resume in {run_dir}")
    done = finished_step(run_dir, config.steps) if resume else None
    if done is not None:  # nothing to train: the final checkpoint stays as it is
        return TrainOutcome(run_dir / FINAL_NAME, run_dir, done, float("nan"), 0.0, 0.0, done,
                            None, already_finished=True)

    seed_everything(config.seed)
    net = FastDenoiser(model_cfg, ds.vocab)
    trainer = make_trainer(noise_cfg, net, train, val, stats, config, dev)
    version = model_version_of(noise_cfg)
    resumed_from = 0
    if existing is not None:
        ckpt = load_checkpoint(existing, n_max=ds.vocab.n_max)
        _check_same_run(ckpt, existing, {
            "dataset_hash": ds.dataset_hash, "model_config": model_cfg.to_dict(),
            "noise": noise_cfg, "split": split, "trajectory": config.trajectory()})
        if ckpt.optimizer_state is None or ckpt.rng_state is None:
            raise BdgenError(f"cannot resume from {existing}: it has no optimizer/RNG state")
        state = {"step": ckpt.step, "model": ckpt.model_state,
                 "optimizer": ckpt.optimizer_state, "scheduler": ckpt.scheduler_state,
                 "rng": ckpt.rng_state}
        if ckpt.rate_network_state is not None:
            state["rate_network"] = ckpt.rate_network_state
        trainer.load_state_dict(state)
        resumed_from = ckpt.step

    def on_checkpoint(tr: Trainer, final: bool) -> None:
        state = tr.state_dict()
        rate = getattr(tr.objective, "rate_network", None)
        ckpt = Checkpoint(
            version=version, model_config=model_cfg.to_dict(), n_max=ds.vocab.n_max,
            noise=noise_cfg, train_config={**config.to_dict(), "model": model, "device": str(dev)},
            dataset_hash=ds.dataset_hash, dataset_id=ds.dataset_id, split=split,
            num_rooms_distribution=list(stats.num_rooms_distribution),
            edge_class_weights=list(stats.edge_class_weights), step=state["step"],
            model_state=state["model"], optimizer_state=state["optimizer"],
            scheduler_state=state["scheduler"], rng_state=state["rng"],
            rate_network_state=state.get("rate_network"),
            rate_network_config=(rate.config.to_dict() if rate is not None else None))
        name = FINAL_NAME if final else f"checkpoint_step_{state['step']:07d}.pt"
        save_checkpoint(ckpt, run_dir / name)
        if on_checkpoint_saved:
            on_checkpoint_saved(state["step"])

    def on_validation(v: ValResult) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(run_dir / "train_log.jsonl", "a") as fh:
            row = {"step": v.step, "val_loss": v.loss, "val_node_accuracy": v.node_accuracy,
                   "val_edge_accuracy": v.edge_accuracy}
            row.update(trainer.objective.log_fields(trainer.step, config.steps))
            fh.write(json.dumps(row) + "\n")
        if on_metrics:
            on_metrics(row)

    def on_log(step: int, loss: float, lr: float) -> None:
        beat.update(step, loss=loss, lr=f"{lr:.2e}")
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(run_dir / "train_log.jsonl", "a") as fh:
            row = {"step": step, "train_loss": loss, "lr": lr}
            row.update(trainer.objective.log_fields(trainer.step, config.steps))
            fh.write(json.dumps(row) + "\n")
        fault_point("train.step")
        if on_metrics:
            on_metrics(row)

    # The trainer draws its own bar on a terminal; without one, progress lines (>= 1 / 10 s).
    with StepProgress("train", config.steps, enabled=heartbeat) as beat:
        result = trainer.run(on_checkpoint, on_validation, progress=progress and on_terminal(),
                             on_log=on_log)
    return TrainOutcome(run_dir / FINAL_NAME, run_dir, result.step, result.final_loss,
                        result.steps_per_s, result.wall_s, resumed_from,
                        result.val[-1] if result.val else None)
