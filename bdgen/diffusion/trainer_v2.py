"""The v2 training loop (spec §4.4): denoiser and rate network trained jointly.

:class:`TrainerV2` reuses everything of the v1 :class:`~bdgen.diffusion.trainer.Trainer`
(on-device data, shuffling, LambdaLR warm-up, logging, validation cadence, checkpoint
callbacks, exact resumption) and replaces only what v2 changes:

* **one** AdamW over denoiser + rate-network parameters; gradient clipping over both;
* t ~ U(0, 1) clamped ≥ 1e-5, no importance sampling (``is_mode`` must be ``"off"``);
* STGS masking with the annealed Gumbel temperature (progress = step / total steps, the
  step-based analogue of the legacy per-epoch ``epoch/(E − 1)``), soft embeddings fed to the
  denoiser as ``pre_embedded``, and the per-position ELBO :class:`ELBOLossV2`;
* validation: Bernoulli per-position masking with the learned α, the denoiser on discrete
  tokens, the same V2 loss (plus argmax accuracies at masked real positions);
* the trainer state carries the rate network (``state["rate_network"]``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from bdgen.diffusion.loss import masked_accuracy
from bdgen.diffusion.loss_v2 import ELBOLossV2
from bdgen.diffusion.rate_network import RateNetwork
from bdgen.diffusion.schedules import T_MIN, make_schedule
from bdgen.diffusion.stgs import (
    TAU_SCHEDULES,
    anneal_progress,
    forward_mask_eval_learned,
    gumbel_temperature,
    stgs_forward,
)
from bdgen.diffusion.trainer import TrainConfig, Trainer, ValResult, make_adamw, warmup_factor
from bdgen.errors import BdgenError


@dataclass(frozen=True)
class V2Settings:
    """The v2-only training settings (legacy ``configs/training/v2.yaml``)."""

    lambda_edge: float = 1.0
    tau_start: float = 1.0
    tau_end: float = 0.1
    tau_schedule: str = "linear"

    def __post_init__(self) -> None:
        if self.tau_schedule not in TAU_SCHEDULES:
            raise BdgenError(f"unknown Gumbel temperature schedule {self.tau_schedule!r}; "
                             f"valid: {', '.join(TAU_SCHEDULES)}")
        if self.tau_start <= 0 or self.tau_end <= 0:
            raise BdgenError(f"Gumbel temperatures must be > 0, got {self.tau_start}, "
                             f"{self.tau_end}")
        if self.lambda_edge < 0:
            raise BdgenError(f"lambda_edge must be >= 0, got {self.lambda_edge}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> V2Settings:
        try:
            return cls(**(data or {}))
        except TypeError as exc:
            raise BdgenError(f"bad v2 training settings {data}: {exc}") from None


class TrainerV2(Trainer):
    """v1 trainer with the v2 objective; ``run()``, callbacks and resumption are inherited."""

    def __init__(self, model: nn.Module, rate_network: RateNetwork, train_tokens: Tensor,
                 train_pad_mask: Tensor, edge_class_weights: Tensor | list[float],
                 config: TrainConfig, device: torch.device | str = "cpu",
                 val_tokens: Tensor | None = None, val_pad_mask: Tensor | None = None,
                 v2: V2Settings | None = None) -> None:
        if config.is_mode != "off":
            raise BdgenError(f"v2 training draws t uniformly: is_mode must be 'off', "
                             f"got {config.is_mode!r}")
        # The v1 schedule is unused by v2; the base class needs one, so give it a loglinear.
        super().__init__(model, make_schedule({"type": "loglinear"}), train_tokens,
                         train_pad_mask, edge_class_weights, config, device, val_tokens,
                         val_pad_mask)
        self.v2 = v2 or V2Settings()
        self.rate_network = rate_network.to(self.device)
        self.loss_v2 = ELBOLossV2(self.loss_fn.edge_class_weights,
                                  lambda_edge=self.v2.lambda_edge)
        self.optimizer = make_adamw(self.parameters(), config, self.device)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_factor(config.warmup_steps))

    def parameters(self) -> list[nn.Parameter]:
        """Denoiser then rate-network parameters (the single optimiser's parameter list)."""
        return list(self.model.parameters()) + list(self.rate_network.parameters())

    @property
    def gumbel_tau(self) -> float:
        """Gumbel temperature of the next step (logged as ``train/gumbel_temp``)."""
        progress = anneal_progress(self.step, self.config.steps)
        return gumbel_temperature(progress, self.v2.tau_start, self.v2.tau_end,
                                  self.v2.tau_schedule)

    # -- state ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        state = super().state_dict()
        state["rate_network"] = {k: v.detach().cpu().clone()
                                 for k, v in self.rate_network.state_dict().items()}
        return state

    def load_state_dict(self, state: dict) -> None:
        if "rate_network" not in state:
            raise BdgenError("cannot resume v2 training: the state has no rate network")
        self.rate_network.load_state_dict(state["rate_network"])
        super().load_state_dict(state)

    # -- steps ---------------------------------------------------------------------------
    def train_step(self) -> Tensor:
        x0, pad = self._next_batch()
        t = torch.rand(x0.shape[0], device=self.device).clamp_min(T_MIN)
        tau = self.gumbel_tau
        self.rate_network.train()
        rates = self.rate_network.rates(t, pad)
        sample = stgs_forward(self.model, x0, pad, rates.alpha, tau)
        node_logits, edge_logits = self.forward_model(x0, pad, t, pre_embedded=sample.embeddings)
        out = self.loss_v2(node_logits, edge_logits, x0, pad, sample.mask, rates.alpha,
                           rates.alpha_prime)
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        if self.config.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return out.loss.detach()

    @torch.no_grad()
    def validate(self) -> ValResult:
        """V2 loss with Bernoulli per-position masking (uniform t) and masked accuracies."""
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
            rates = self.rate_network.rates(t, pad)
            x_t, mask = forward_mask_eval_learned(x0, pad, rates.alpha, generator=gen)
            node_logits, edge_logits = self.model(x_t, pad, t)
            out = self.loss_v2(node_logits, edge_logits, x0, pad, mask, rates.alpha,
                               rates.alpha_prime)
            loss_sum += out.loss * x0.shape[0]
            counts += masked_accuracy(node_logits, edge_logits, x0, mask & pad)
        self.model.train(was_training)
        c = counts.tolist()
        return ValResult(self.step, loss_sum.item() / max(n, 1), c[0] / max(c[1], 1),
                         c[2] / max(c[3], 1))
