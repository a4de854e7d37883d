"""The forward process as the sampler sees it: unmasking probability and remasking budget.

The sampler (spec §5) needs two quantities per step, and nothing else from the forward
process, so v1 (a fixed schedule: one value per sample, ``[B, 1]``) and v2 (a rate
network: one value per position, ``[B, S]``) plug into the same loop; the sampler only
broadcasts. Both quantities follow the float64 rules of spec §3.6 and are returned as
float32.

v2 plugs in as ``bdgen.diffusion.process_v2.RateNetworkProcess`` (rate network evaluated
in float32, only the difference/ratio in float64, ``[B, S]`` outputs), built by
``bdgen.pipeline.generate`` for v2 checkpoints through ``from_checkpoint(ckpt, device)``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from bdgen.diffusion.schedules import NoiseSchedule

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


class ScheduleProcess:
    """v1: a fixed noise schedule, one value per sample (``[B, 1]``).

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
        p = (a_next - a_now) / (1.0 - a_now + P_UNMASK_EPS)
        return p.clamp(0.0, 1.0).to(torch.float32).unsqueeze(-1)

    def sigma_max(self, t_now: Tensor, t_next: Tensor, pad_mask: Tensor) -> Tensor:
        a_now = self.schedule.alpha(t_now.to(torch.float64))
        a_next = self.schedule.alpha(t_next.to(torch.float64))
        s = (1.0 - a_next) / (a_now + SIGMA_MAX_EPS)
        return s.clamp(0.0, 1.0).to(torch.float32).unsqueeze(-1)
