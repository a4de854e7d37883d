"""The v2 forward process as the sampler sees it: per-position p_unmask and σ_max (§4.5, §5.6).

Kept apart from :mod:`bdgen.diffusion.rate_network` so the network itself does not depend on
the sampler's modules.
"""

from __future__ import annotations

from typing import Any

import torch

from bdgen.diffusion.process import P_UNMASK_EPS, SIGMA_MAX_EPS, ForwardProcess, ScheduleProcess
from bdgen.diffusion.rate_network import RateNetwork, build_rate_network


class RateNetworkProcess:
    """v2 forward process for the sampler (``ForwardProcess`` protocol of
    :mod:`bdgen.diffusion.process`): per-position p_unmask and σ_max, ``[B, S]``.

    Dtype path (spec §3.6): the rate network is evaluated in float32 on float32 t (t_next is
    rounded to float32 first); only the difference/ratio is computed in float64; results are
    cast to float32. PAD positions have α = 1 at every t, so p_unmask = σ_max = 0 there — the
    PAD mask is passed for σ_max too (cap/rescale included; the legacy path forgot it).
    """

    def __init__(self, rate_network: RateNetwork) -> None:
        self.rate_network = rate_network.eval()

    @classmethod
    def from_checkpoint(cls, ckpt: Any, device: str | torch.device = "cpu") -> RateNetworkProcess:
        """The process of a v2 checkpoint, rebuilt from the checkpoint alone."""
        return cls(build_rate_network(ckpt, device))

    def to(self, device: torch.device | str) -> RateNetworkProcess:
        self.rate_network = self.rate_network.to(device)
        return self

    def _alphas(self, t_now: torch.Tensor, t_next: torch.Tensor,
                pad_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            a_now = self.rate_network(t_now.to(torch.float32), pad_mask)
            a_next = self.rate_network(t_next.to(torch.float32), pad_mask)
        return a_now.to(torch.float64), a_next.to(torch.float64)

    def p_unmask(self, t_now: torch.Tensor, t_next: torch.Tensor,
                 pad_mask: torch.Tensor) -> torch.Tensor:
        a_now, a_next = self._alphas(t_now, t_next, pad_mask)
        p = (a_next - a_now) / (1.0 - a_now + P_UNMASK_EPS)
        return p.clamp(0.0, 1.0).to(torch.float32)

    def sigma_max(self, t_now: torch.Tensor, t_next: torch.Tensor,
                  pad_mask: torch.Tensor) -> torch.Tensor:
        a_now, a_next = self._alphas(t_now, t_next, pad_mask)
        s = (1.0 - a_next) / (a_now + SIGMA_MAX_EPS)
        return s.clamp(0.0, 1.0).to(torch.float32)

    def alpha(self, t: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        """Per-position keep probability ``[B, S]`` (the ``alpha_fn`` of denoising metrics)."""
        with torch.no_grad():
            return self.rate_network(t, pad_mask)


def is_v2_checkpoint(ckpt: Any) -> bool:
    """A v2 (learned forward process) model: version "v2" or a stored rate network."""
    return getattr(ckpt, "version", None) == "v2" or \
        getattr(ckpt, "rate_network_state", None) is not None


def process_from_checkpoint(ckpt: Any, device: str | torch.device = "cpu") -> ForwardProcess:
    """The forward process a checkpoint was trained with, built from the checkpoint alone:
    v2 → :class:`RateNetworkProcess`, v1 → :class:`ScheduleProcess` of its noise schedule."""
    if is_v2_checkpoint(ckpt):
        return RateNetworkProcess.from_checkpoint(ckpt, device)
    from bdgen.diffusion.schedules import make_schedule

    return ScheduleProcess(make_schedule(ckpt.noise)).to(device)
