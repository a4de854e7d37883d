"""The forward process as the sampler sees it: unmasking probability and remasking budget.

The reverse step (:mod:`bdgen.diffusion.reverse`) needs two quantities per step and nothing
else from the forward process, so both kinds plug into one loop and the sampler only
broadcasts:

* a **fixed schedule** (model version "v1"): alpha(t) is one number per sample, the
  outputs are ``[B, 1]`` (:class:`ScheduleProcess`);
* **learned rates** (model version "v2", spec §4.5): a rate network gives alpha per
  position, the outputs are ``[B, S]``, 0 at PAD (:class:`RateNetworkProcess`).

Both use the same two formulas (:func:`p_unmask_of`, :func:`sigma_max_of`, float64, spec
§3.6), returned as float32. :func:`forward_process_of` is the one place that builds a
checkpoint's forward process (generation, denoising metrics, benches).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from bdgen.diffusion.method import FIXED_SCHEDULE_VERSION, LEARNED_RATES_VERSION
from bdgen.diffusion.rate_network import RateNetwork, build_rate_network
from bdgen.diffusion.schedules import NoiseSchedule, make_schedule
from bdgen.errors import BdgenError

P_UNMASK_EPS = 1e-8   # denominator guard of p_unmask (spec §5.3b)
SIGMA_MAX_EPS = 1e-8  # denominator guard of sigma_max (spec §5.5)


@runtime_checkable
class ForwardProcess(Protocol):
    """What the sampler needs from a forward process."""

    def p_unmask(self, t_now: Tensor, t_next: Tensor, pad_mask: Tensor) -> Tensor:
        """P(reveal a masked position in this step), float32 ``[B, 1]`` or ``[B, S]``.

        ``t_now`` is the float32 model-input time ``[B]``, ``t_next`` a float64 ``[B]``.
        """
        ...

    def sigma_max(self, t_now: Tensor, t_next: Tensor, pad_mask: Tensor) -> Tensor:
        """ReMDM remasking upper bound, float32 ``[B, 1]`` or ``[B, S]``; t's are float64."""
        ...


def p_unmask_of(a_now: Tensor, a_next: Tensor) -> Tensor:
    """``(alpha(t_next) - alpha(t_now)) / (1 - alpha(t_now) + eps)`` in [0, 1], float32."""
    p = (a_next - a_now) / (1.0 - a_now + P_UNMASK_EPS)
    return p.clamp(0.0, 1.0).to(torch.float32)


def sigma_max_of(a_now: Tensor, a_next: Tensor) -> Tensor:
    """``(1 - alpha(t_next)) / (alpha(t_now) + eps)`` in [0, 1], float32 (ReMDM's bound)."""
    s = (1.0 - a_next) / (a_now + SIGMA_MAX_EPS)
    return s.clamp(0.0, 1.0).to(torch.float32)


class ScheduleProcess:
    """A fixed noise schedule, one value per sample (``[B, 1]``).

    Dtype path (spec §3.6): p_unmask evaluates alpha on the float32 t_now promoted to
    float64 and on the float64 t_next; sigma_max on float64 t_now and t_next. The schedule's
    float32 constants are promoted by the schedule itself.
    """

    def __init__(self, schedule: NoiseSchedule) -> None:
        self.schedule = schedule

    def to(self, device: torch.device | str) -> ScheduleProcess:
        self.schedule = self.schedule.to(device)
        return self

    def p_unmask(self, t_now: Tensor, t_next: Tensor, pad_mask: Tensor) -> Tensor:
        a_now = self.schedule.alpha(t_now.to(torch.float32).to(torch.float64))
        a_next = self.schedule.alpha(t_next.to(torch.float64))
        return p_unmask_of(a_now, a_next).unsqueeze(-1)

    def sigma_max(self, t_now: Tensor, t_next: Tensor, pad_mask: Tensor) -> Tensor:
        a_now = self.schedule.alpha(t_now.to(torch.float64))
        a_next = self.schedule.alpha(t_next.to(torch.float64))
        return sigma_max_of(a_now, a_next).unsqueeze(-1)

    def alpha(self, t: Tensor, pad_mask: Tensor) -> Tensor:
        """Keep probability ``[B, 1]`` (the ``alpha_fn`` of denoising metrics)."""
        return self.schedule.alpha(t).reshape(-1, 1)


class RateNetworkProcess:
    """Learned rates: per-position p_unmask and sigma_max, ``[B, S]``.

    Dtype path (spec §3.6): the rate network is evaluated in float32 on float32 t (t_next is
    rounded to float32 first); only the difference/ratio is computed in float64; results are
    cast to float32. PAD positions have alpha = 1 at every t, so p_unmask = sigma_max = 0
    there; the PAD mask is passed for sigma_max too (the original code forgot it).
    """

    def __init__(self, rate_network: RateNetwork) -> None:
        self.rate_network = rate_network.eval()

    def to(self, device: torch.device | str) -> RateNetworkProcess:
        self.rate_network = self.rate_network.to(device)
        return self

    def _alphas(self, t_now: Tensor, t_next: Tensor, pad_mask: Tensor) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            a_now = self.rate_network(t_now.to(torch.float32), pad_mask)
            a_next = self.rate_network(t_next.to(torch.float32), pad_mask)
        return a_now.to(torch.float64), a_next.to(torch.float64)

    def p_unmask(self, t_now: Tensor, t_next: Tensor, pad_mask: Tensor) -> Tensor:
        return p_unmask_of(*self._alphas(t_now, t_next, pad_mask))

    def sigma_max(self, t_now: Tensor, t_next: Tensor, pad_mask: Tensor) -> Tensor:
        return sigma_max_of(*self._alphas(t_now, t_next, pad_mask))

    def alpha(self, t: Tensor, pad_mask: Tensor) -> Tensor:
        """Per-position keep probability ``[B, S]`` (the ``alpha_fn`` of denoising metrics)."""
        with torch.no_grad():
            result: Tensor = self.rate_network(t, pad_mask)
            return result


def has_learned_rates(ckpt: Any) -> bool:
    """Whether a checkpoint's forward process is a rate network: its stored version."""
    version = getattr(ckpt, "version", None)
    if version not in (FIXED_SCHEDULE_VERSION, LEARNED_RATES_VERSION):
        raise BdgenError(f"checkpoint version {version!r} is not "
                         f"{FIXED_SCHEDULE_VERSION} or {LEARNED_RATES_VERSION}")
    return bool(version == LEARNED_RATES_VERSION)


def forward_process_of(ckpt: Any, device: str | torch.device = "cpu"
                       ) -> ScheduleProcess | RateNetworkProcess:
    """The forward process a checkpoint was trained with, from the checkpoint alone: its
    rate network (version "v2") or its noise schedule (version "v1")."""
    if has_learned_rates(ckpt):
        return RateNetworkProcess(build_rate_network(ckpt, device))
    return ScheduleProcess(make_schedule(ckpt.noise)).to(device)
