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
from bdgen.diffusion.trainer import TrainConfig, Trainer, make_adamw, warmup_factor
from bdgen.errors import BdgenError
from bdgen.model.precision import autocast


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
        if config.compile:
            # The Gumbel temperature changes every step: compiling the whole loss would
            # recompile each step, so only the denoiser is compiled for v2.
            self._loss_step = self._train_loss
            self.forward_model = torch.compile(model, mode=config.compile_mode)

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
    def _train_loss(self, x0: Tensor, pad: Tensor) -> Tensor:
        """The v2 objective: STGS masking from the rate network, per-position ELBO."""
        t = torch.rand(x0.shape[0], device=self.device).clamp_min(T_MIN)
        self.rate_network.train()
        rates = self.rate_network.rates(t, pad)
        sample = stgs_forward(self.model, x0, pad, rates.alpha, self.gumbel_tau)
        with autocast(self.device, self.config.precision):
            node_logits, edge_logits = self.forward_model(x0, pad, t,
                                                          pre_embedded=sample.embeddings)
        return self.loss_v2(node_logits.float(), edge_logits.float(), x0, pad, sample.mask,
                            rates.alpha, rates.alpha_prime).loss

    def _val_batch(self, x0: Tensor, pad: Tensor, t: Tensor, gen: torch.Generator
                   ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """V2 loss with plain Bernoulli per-position masking (no STGS) on one val batch."""
        rates = self.rate_network.rates(t, pad)
        x_t, mask = forward_mask_eval_learned(x0, pad, rates.alpha, generator=gen)
        node_logits, edge_logits = self.model(x_t, pad, t)
        out = self.loss_v2(node_logits, edge_logits, x0, pad, mask, rates.alpha,
                           rates.alpha_prime)
        return out.loss * x0.shape[0], node_logits, edge_logits, mask
