"""Training objectives: what the trainer (:mod:`bdgen.diffusion.trainer`) optimises.

An objective is a forward process plus its loss; the trainer owns the rest (data order,
AdamW over the model's and the objective's parameters, warm-up, clipping, validation
cadence, resumption). Two objectives, named by their forward process:

* :class:`FixedScheduleObjective` (model version "v1", spec §3): t drawn with the
  importance-sampling mode of the run, Bernoulli masking with the schedule's alpha(t), the
  MDLM ELBO :class:`~bdgen.diffusion.loss.ELBOLoss`.
* :class:`LearnedRatesObjective` (model version "v2", spec §4.4): the denoiser and a rate
  network trained jointly; t ~ U(0, 1) clamped >= 1e-5 (no importance sampling); STGS
  masking with the annealed Gumbel temperature (progress = step / total steps, the
  step-based analogue of the original per-epoch ``epoch/(E - 1)``), soft embeddings fed to
  the denoiser as ``pre_embedded``, the per-position ELBO
  :class:`~bdgen.diffusion.loss.PerPositionELBOLoss`. Validation masks with plain Bernoulli
  draws of the learned alpha and runs the denoiser on discrete tokens.

:func:`noise_config` expands a ``--noise`` name into the stored noise config,
:func:`model_version_of` gives its stored model version, :func:`objective_for` builds its
objective: the one place that decides between the two.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from bdgen.data.vocab import VocabConfig
from bdgen.diffusion.forward import forward_mask
from bdgen.diffusion.loss import ELBOLoss, PerPositionELBOLoss, sample_t
from bdgen.diffusion.method import FIXED_SCHEDULE_VERSION, LEARNED_RATES_VERSION
from bdgen.diffusion.rate_network import NOISE_TYPE_LEARNED, RateNetwork, RateNetworkConfig
from bdgen.diffusion.schedules import DEFAULT_NOISE, T_MIN, NoiseSchedule, make_schedule
from bdgen.diffusion.stgs import (
    TAU_SCHEDULES,
    anneal_progress,
    forward_mask_eval_learned,
    gumbel_temperature,
    stgs_forward,
)
from bdgen.errors import BdgenError
from bdgen.model.denoiser import BDDenoiser
from bdgen.model.precision import autocast

ValBatch = tuple[Tensor, Tensor, Tensor, Tensor]  # summed loss, node/edge logits, mask
DenoiserFn = Callable[..., tuple[Tensor, Tensor]]  # the model, or the model compiled


class FixedScheduleObjective:
    """The MDLM ELBO of a fixed noise schedule, t drawn by ``is_mode`` (spec §3.2-3.4)."""

    compiles_whole_loss = True   # masking, model and ELBO compile as one graph

    def __init__(self, schedule: NoiseSchedule, edge_class_weights: Tensor | list[float],
                 is_mode: str) -> None:
        self.schedule = schedule
        self.edge_class_weights = edge_class_weights
        self.is_mode = is_mode

    def setup(self, device: torch.device, precision: str) -> None:
        self.device, self.precision = device, precision
        self.schedule = self.schedule.to(device)
        weights = torch.as_tensor(self.edge_class_weights, dtype=torch.float32, device=device)
        self.loss_fn = ELBOLoss(self.schedule, weights)

    def parameters(self) -> list[nn.Parameter]:
        return []

    def at_step(self, step: int, total: int) -> None:
        """Nothing depends on the step."""

    def log_fields(self, step: int, total: int) -> dict[str, float]:
        return {}

    def train_loss(self, model: BDDenoiser, forward_model: DenoiserFn, x0: Tensor, pad: Tensor
                   ) -> Tensor:
        t, factor = sample_t(self.schedule, x0.shape[0], self.is_mode, self.device)
        x_t, mask = forward_mask(x0, pad, self.schedule.alpha(t)[:, None])
        with autocast(self.device, self.precision):
            node_logits, edge_logits = forward_model(x_t, pad, t)
        return self.loss_fn(node_logits.float(), edge_logits.float(), x0, pad, mask, t,
                            factor).loss

    def val_batch(self, model: BDDenoiser, x0: Tensor, pad: Tensor, t: Tensor,
                  gen: torch.Generator) -> ValBatch:
        x_t, mask = forward_mask(x0, pad, self.schedule.alpha(t)[:, None], generator=gen)
        node_logits, edge_logits = model(x_t, pad, t)
        out = self.loss_fn(node_logits, edge_logits, x0, pad, mask, t)
        return (out.weight * out.per_sample).sum(), node_logits, edge_logits, mask

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing beyond the model's state."""


@dataclass(frozen=True)
class LearnedRatesSettings:
    """The training settings of learned rates (kept in the checkpoint's noise config)."""

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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> LearnedRatesSettings:
        try:
            return cls(**(data or {}))
        except TypeError as exc:
            raise BdgenError(f"bad learned-rates training settings {data}: {exc}") from None


class LearnedRatesObjective:
    """Denoiser and rate network trained jointly (module docstring)."""

    compiles_whole_loss = False  # the Gumbel temperature changes every step: model only

    def __init__(self, rate_network: RateNetwork, edge_class_weights: Tensor | list[float],
                 settings: LearnedRatesSettings | None = None) -> None:
        self.rate_network = rate_network
        self.edge_class_weights = edge_class_weights
        self.settings = settings or LearnedRatesSettings()
        self.gumbel_tau = self.settings.tau_start

    def setup(self, device: torch.device, precision: str) -> None:
        self.device, self.precision = device, precision
        self.rate_network = self.rate_network.to(device)
        weights = torch.as_tensor(self.edge_class_weights, dtype=torch.float32, device=device)
        self.loss_fn = PerPositionELBOLoss(weights, lambda_edge=self.settings.lambda_edge)

    def parameters(self) -> list[nn.Parameter]:
        return list(self.rate_network.parameters())

    def tau_at(self, step: int, total: int) -> float:
        """The annealed Gumbel temperature of step ``step`` of ``total``."""
        s = self.settings
        return gumbel_temperature(anneal_progress(step, total), s.tau_start, s.tau_end,
                                  s.tau_schedule)

    def at_step(self, step: int, total: int) -> None:
        self.gumbel_tau = self.tau_at(step, total)

    def log_fields(self, step: int, total: int) -> dict[str, float]:
        """The temperature of the next step (the original's ``train/gumbel_temp``)."""
        return {"gumbel_temp": self.tau_at(step, total)}

    def train_loss(self, model: BDDenoiser, forward_model: DenoiserFn, x0: Tensor, pad: Tensor
                   ) -> Tensor:
        t = torch.rand(x0.shape[0], device=self.device).clamp_min(T_MIN)
        self.rate_network.train()
        rates = self.rate_network.rates(t, pad)
        sample = stgs_forward(model, x0, pad, rates.alpha, self.gumbel_tau)
        with autocast(self.device, self.precision):
            node_logits, edge_logits = forward_model(x0, pad, t, pre_embedded=sample.embeddings)
        return self.loss_fn(node_logits.float(), edge_logits.float(), x0, pad, sample.mask,
                            rates.alpha, rates.alpha_prime).loss

    def val_batch(self, model: BDDenoiser, x0: Tensor, pad: Tensor, t: Tensor,
                  gen: torch.Generator) -> ValBatch:
        rates = self.rate_network.rates(t, pad)
        x_t, mask = forward_mask_eval_learned(x0, pad, rates.alpha, generator=gen)
        node_logits, edge_logits = model(x_t, pad, t)
        out = self.loss_fn(node_logits, edge_logits, x0, pad, mask, rates.alpha,
                           rates.alpha_prime)
        return out.loss * x0.shape[0], node_logits, edge_logits, mask

    def state_dict(self) -> dict[str, Any]:
        return {"rate_network": {k: v.detach().cpu().clone()
                                 for k, v in self.rate_network.state_dict().items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("rate_network") is None:
            raise BdgenError("cannot resume learned-rates training: the state has no rate "
                             "network")
        self.rate_network.load_state_dict(state["rate_network"])


Objective = FixedScheduleObjective | LearnedRatesObjective


def objective_for(noise: dict[str, Any], vocab: VocabConfig,
                  edge_class_weights: Tensor | list[float], is_mode: str) -> Objective:
    """The objective of a noise config: a fresh rate network for ``{"type": "learned",
    ...}`` (its hyper-parameters and :class:`LearnedRatesSettings` read from the same dict),
    else the fixed schedule of that config."""
    if noise.get("type") != NOISE_TYPE_LEARNED:
        return FixedScheduleObjective(make_schedule(noise), edge_class_weights, is_mode)
    if is_mode != "off":
        raise BdgenError(f"learned rates draw t uniformly: is_mode must be 'off', "
                         f"got {is_mode!r}")
    rate_keys = RateNetworkConfig.__dataclass_fields__
    rate = RateNetwork(RateNetworkConfig.from_dict({k: v for k, v in noise.items()
                                                    if k in rate_keys}), vocab)
    settings = LearnedRatesSettings.from_dict(
        {k: v for k, v in noise.items() if k in LearnedRatesSettings.__dataclass_fields__})
    return LearnedRatesObjective(rate, edge_class_weights, settings)


def noise_config(noise: str) -> dict[str, Any]:
    """The stored noise config of a ``--noise`` name: a schedule's defaults, or for
    ``learned`` the rate network's hyper-parameters and :class:`LearnedRatesSettings`."""
    if noise == NOISE_TYPE_LEARNED:
        return {"type": NOISE_TYPE_LEARNED, **RateNetworkConfig().to_dict(),
                **LearnedRatesSettings().to_dict()}
    if noise not in DEFAULT_NOISE:
        raise BdgenError(f"unknown noise schedule {noise!r}; valid: {', '.join(DEFAULT_NOISE)}")
    return dict(DEFAULT_NOISE[noise])


def model_version_of(noise: dict[str, Any]) -> str:
    """The stored model version of a noise config: "v2" for learned rates, else "v1"."""
    return LEARNED_RATES_VERSION if noise["type"] == NOISE_TYPE_LEARNED \
        else FIXED_SCHEDULE_VERSION
