"""The training loop (spec §3.5, §4.4), written for throughput and exact resumption.

The trainer optimises an objective (:mod:`bdgen.diffusion.objective`: a forward process
and its loss; a fixed schedule or learned rates) and owns everything else:

* one AdamW over the model's and the objective's parameters (the rate network of learned
  rates), LambdaLR warm-up, gradient clipping over both;

* The tokenised train split lives on the training device as one tensor; each epoch is a
  ``randperm`` from a dedicated CPU ``torch.Generator`` and batches are index slices of it
  (``drop_last``). No DataLoader, no worker processes, so no stall at epoch boundaries.
* No host synchronisation per step: the loss is accumulated on the device and read every
  ``log_every`` steps for the progress bar.
* Everything that decides the continuation (model, AdamW, LambdaLR, the global torch RNG
  used for t, masks and dropout, the shuffle generator's state at the start of the epoch and
  the position inside it) is in :meth:`Trainer.state_dict`, so N steps + resume + N steps
  gives the same parameters as 2N straight steps (bitwise on CPU).
* Validation draws t ~ U(0,1) and masks from its own freshly seeded generator, so it neither
  disturbs the training RNG nor varies between evaluations.

The loop does no file I/O: it calls ``on_checkpoint(trainer, final)`` and the pipeline
writes the file. EMA is not implemented (the legacy code does not implement it either).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from bdgen.diffusion.loss import (
    IS_MODE_ALIASES,
    STORED_IS_MODE,
    canonical_is_mode,
    masked_accuracy,
)
from bdgen.diffusion.objective import DenoiserFn, Objective
from bdgen.diffusion.schedules import T_MIN
from bdgen.errors import BdgenError
from bdgen.model.denoiser import BDDenoiser
from bdgen.model.precision import DEFAULT_PRECISION, check_precision


@dataclass
class TrainConfig:
    steps: int = 126_000          # legacy: 500 epochs x 252 batches
    batch_size: int = 256
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup_steps: int = 1000
    grad_clip: float = 1.0
    is_mode: str = "unbiased"     # "unbiased" | "uncorrected" | "off" (bdgen.diffusion.loss)
    seed: int = 42
    checkpoint_every: int = 5000
    val_every: int = 1260         # legacy: every 5 epochs of RPLAN
    log_every: int = 50
    compile: bool = False
    compile_mode: str = "default"  # torch.compile mode, e.g. "reduce-overhead" (CUDA graphs)
    precision: str = DEFAULT_PRECISION  # denoiser forward: fp32 | bf16 (bdgen.model.precision)

    # Fields that change the optimisation trajectory (part of a run's identity).
    TRAJECTORY_KEYS = ("batch_size", "lr", "weight_decay", "warmup_steps", "grad_clip",
                       "is_mode", "seed")

    def __post_init__(self) -> None:
        check_precision(self.precision)
        self.is_mode = canonical_is_mode(self.is_mode)
        for name in ("steps", "batch_size", "checkpoint_every", "val_every", "log_every"):
            if getattr(self, name) < 1:
                raise BdgenError(f"{name} must be >= 1, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def trajectory(self) -> dict[str, Any]:
        return trajectory_of(self.to_dict())


def trajectory_of(train_config: dict[str, Any]) -> dict[str, Any]:
    """The fields of a (checkpoint's) train config that make a run's identity. ``precision``
    joins them only when it is not float32, so run names (and resumable runs) from before
    the option existed stay valid."""
    ident = {k: train_config.get(k) for k in TrainConfig.TRAJECTORY_KEYS}
    mode = ident["is_mode"]
    if isinstance(mode, str):  # aliases resolved, then the name the run identity keeps
        mode = IS_MODE_ALIASES.get(mode, mode)
        ident["is_mode"] = STORED_IS_MODE.get(mode, mode)
    precision = train_config.get("precision", DEFAULT_PRECISION)
    if precision != DEFAULT_PRECISION:
        ident["precision"] = precision
    return ident


def seed_everything(seed: int) -> None:
    """Seed the global torch RNG (CPU and CUDA): model init, t, masks, dropout."""
    torch.manual_seed(seed)


def warmup_factor(warmup_steps: int) -> Callable[[int], float]:
    """LambdaLR factor: ``step / warmup`` below warm-up (the first update uses lr 0), then 1."""
    def factor(step: int) -> float:
        return min(step / warmup_steps, 1.0) if warmup_steps > 0 else 1.0
    return factor


def make_adamw(params: Iterable[nn.Parameter], config: TrainConfig,
               device: torch.device) -> torch.optim.AdamW:
    """AdamW (torch defaults betas/eps) with the fused kernel where this torch has one for
    ``device`` (one kernel for all parameters instead of several per parameter)."""
    params = list(params)
    try:
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay,
                                 fused=device.type in ("cuda", "cpu"))
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


@dataclass
class ValResult:
    step: int
    loss: float
    node_accuracy: float
    edge_accuracy: float


@dataclass
class TrainResult:
    step: int
    final_loss: float             # mean training loss over the last logging window
    steps_per_s: float            # this call's optimiser steps / wall time (incl. val, ckpt)
    wall_s: float
    val: list[ValResult] = field(default_factory=list)


class Trainer:
    """Owns model, optimiser, LR schedule and data order; ``run()`` trains to ``config.steps``."""

    def __init__(self, model: BDDenoiser, objective: Objective, train_tokens: Tensor,
                 train_pad_mask: Tensor, config: TrainConfig,
                 device: torch.device | str = "cpu", val_tokens: Tensor | None = None,
                 val_pad_mask: Tensor | None = None) -> None:
        self.config = config
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.objective = objective
        objective.setup(self.device, config.precision)
        self.tokens = train_tokens.to(self.device, torch.long)
        self.pad_mask = train_pad_mask.to(self.device, torch.bool)
        self.val_tokens = None if val_tokens is None else val_tokens.to(self.device, torch.long)
        self.val_pad_mask = None if val_pad_mask is None else val_pad_mask.to(self.device,
                                                                               torch.bool)
        n = self.tokens.shape[0]
        if n < config.batch_size:
            raise BdgenError(f"the train split has {n} graphs, fewer than the batch size "
                             f"{config.batch_size}")
        self.batches_per_epoch = n // config.batch_size
        self.optimizer = make_adamw(self.parameters(), config, self.device)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_factor(config.warmup_steps))
        self.forward_model: DenoiserFn = model
        self._loss_step: Callable[[Tensor, Tensor], Tensor] = self._train_loss
        if config.compile and objective.compiles_whole_loss:
            # The whole loss (masking, model, ELBO) as one compiled graph, so
            # "reduce-overhead" can replay forward and backward as CUDA graphs.
            self._loss_step = torch.compile(self._train_loss, mode=config.compile_mode)
        elif config.compile:
            self.forward_model = torch.compile(model, mode=config.compile_mode)
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.shuffle = torch.Generator(device="cpu")
        self.shuffle.manual_seed(config.seed)
        self._epoch_start_state = self.shuffle.get_state()
        self._perm: Tensor | None = None

    # -- state ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly (tensors on CPU)."""
        rng = {"torch": torch.get_rng_state(), "shuffle_epoch_start": self._epoch_start_state,
               "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "step": self.step,
            "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng,
            **self.objective.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.objective.load_state_dict(state)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        if self.device.type == "cuda" and "cuda" in rng:
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        self.step = int(state["step"])
        self.epoch = int(rng["epoch"])
        self.batch_in_epoch = int(rng["batch_in_epoch"])
        self._epoch_start_state = rng["shuffle_epoch_start"]
        self._draw_perm()

    # -- steps ---------------------------------------------------------------------------
    def _draw_perm(self) -> None:
        """This epoch's order: a randperm drawn from the epoch's starting generator state."""
        self.shuffle.set_state(self._epoch_start_state)
        perm = torch.randperm(self.tokens.shape[0], generator=self.shuffle)
        self._perm = perm.to(self.device)

    def _next_batch(self) -> tuple[Tensor, Tensor]:
        if self.batch_in_epoch >= self.batches_per_epoch:
            self.epoch += 1
            self.batch_in_epoch = 0
            self._epoch_start_state = self.shuffle.get_state()
            self._draw_perm()
        if self._perm is None:
            self._draw_perm()
        assert self._perm is not None
        b = self.config.batch_size
        idx = self._perm[self.batch_in_epoch * b:(self.batch_in_epoch + 1) * b]
        self.batch_in_epoch += 1
        return self.tokens[idx], self.pad_mask[idx]

    def parameters(self) -> list[nn.Parameter]:
        """What the optimiser updates and gradient clipping covers: the model's parameters,
        then the objective's."""
        return list(self.model.parameters()) + self.objective.parameters()

    def _train_loss(self, x0: Tensor, pad: Tensor) -> Tensor:
        return self.objective.train_loss(self.model, self.forward_model, x0, pad)

    def train_step(self) -> Tensor:
        """One optimiser step; returns the (detached, on-device) loss."""
        x0, pad = self._next_batch()
        self.objective.at_step(self.step, self.config.steps)
        loss = self._loss_step(x0, pad)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return loss.detach()

    @torch.no_grad()
    def validate(self) -> ValResult:
        """Val loss (uniform t, no IS, fixed seed) and argmax accuracy at masked real positions."""
        if self.val_tokens is None or self.val_pad_mask is None:
            raise BdgenError("no validation split was given to the trainer")
        was_training = self.model.training
        self.model.eval()
        gen = torch.Generator(device=self.device)
        gen.manual_seed(self.config.seed + 1)
        loss_sum = torch.zeros((), device=self.device)
        counts = torch.zeros(4, dtype=torch.long, device=self.device)
        n = self.val_tokens.shape[0]
        for start in range(0, n, self.config.batch_size):
            x0 = self.val_tokens[start:start + self.config.batch_size]
            pad = self.val_pad_mask[start:start + self.config.batch_size]
            t = torch.rand(x0.shape[0], generator=gen, device=self.device).clamp_min(T_MIN)
            batch_loss, node_logits, edge_logits, mask = self.objective.val_batch(
                self.model, x0, pad, t, gen)
            loss_sum += batch_loss
            counts += masked_accuracy(node_logits, edge_logits, x0, mask & pad)
        self.model.train(was_training)
        c = counts.tolist()
        return ValResult(self.step, loss_sum.item() / max(n, 1), c[0] / max(c[1], 1),
                         c[2] / max(c[3], 1))

    # -- loop ----------------------------------------------------------------------------
    def run(self, on_checkpoint: Callable[[Trainer, bool], None] | None = None,
            on_validation: Callable[[ValResult], None] | None = None,
            progress: bool = True,
            on_log: Callable[[int, float, float], None] | None = None) -> TrainResult:
        """Train from ``self.step`` to ``config.steps``; checkpoint every N steps and at the end.

        ``on_log(step, mean_loss, lr)`` receives the training-loss curve every ``log_every``
        steps (the loss is read from the device only then, never per step).
        """
        from tqdm import tqdm

        cfg = self.config
        self.model.train()
        start_step, t0 = self.step, time.perf_counter()
        loss_acc = torch.zeros((), device=self.device)
        window = 0
        last_loss = float("nan")
        vals: list[ValResult] = []
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not progress, unit="step",
                   dynamic_ncols=True, mininterval=1.0)
        try:
            while self.step < cfg.steps:
                loss_acc += self.train_step()
                window += 1
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    last_loss = loss_acc.item() / window  # the only per-window host sync
                    if last_loss != last_loss or last_loss in (float("inf"), float("-inf")):
                        raise BdgenError(f"training diverged: loss is {last_loss} at step "
                                         f"{self.step}")
                    loss_acc.zero_()
                    bar.update(window)
                    window = 0
                    lr = self.scheduler.get_last_lr()[0]
                    bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{lr:.2e}")
                    if on_log:
                        on_log(self.step, last_loss, float(lr))
                if self.val_tokens is not None and (self.step % cfg.val_every == 0
                                                    or self.step == cfg.steps):
                    val = self.validate()
                    vals.append(val)
                    if progress:
                        bar.write(f"step {val.step}: val loss {val.loss:.4f}, node acc "
                                  f"{val.node_accuracy:.3f}, edge acc {val.edge_accuracy:.3f}")
                    if on_validation:
                        on_validation(val)
                if on_checkpoint and self.step % cfg.checkpoint_every == 0 \
                        and self.step < cfg.steps:
                    on_checkpoint(self, False)
        finally:
            bar.close()
        if on_checkpoint:
            on_checkpoint(self, True)
        wall = time.perf_counter() - t0
        done = self.step - start_step
        return TrainResult(self.step, last_loss, done / wall if wall > 0 else 0.0, wall, vals)
