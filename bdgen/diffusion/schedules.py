"""Fixed (v1) noise schedules: keep probability alpha(t), its derivative, the ELBO weight and
the importance-sampling map of t (spec §3.1, §3.2, §3.6).

Schedules are ``nn.Module``s whose constants (eps, sigma_min, sigma_max) are float32 buffers,
as in the legacy code: e.g. the log-linear slope is float32(1 - eps), not exactly 0.999. Every
function evaluates in the dtype of its ``t`` argument, so callers choose float64 where §3.6
asks for it (p_unmask, sigma_max, the loss weight).

Importance sampling (IS): ``importance_transform(u)`` maps u ~ U(0,1) to t with density
q(t) proportional to w(t) = -alpha'/(1 - alpha) on the covered range, and
``importance_density(t)`` returns that q(t). The unbiased estimator of the ELBO under IS is
``w(t) * CE / q(t)``; the legacy code multiplied by ``w(t)`` only (a w^2-weighted objective).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from bdgen.errors import BdgenError

T_MIN = 1e-5
"""Lower clamp of t in training and in the loss (spec §3.2, §3.4)."""
W_MAX = 1000.0
"""Upper clamp of the ELBO weight w(t) (spec §3.4)."""
_SIGMA_FLOOR = 1e-8


class NoiseSchedule(nn.Module):
    """alpha(t) in [0, 1], alpha(0) ~ 1 (clean), alpha(1) ~ 0 (fully masked)."""

    name: str = ""

    def alpha(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def alpha_prime(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def sigma(self, t: Tensor) -> Tensor:
        """sigma(t) = -ln alpha(t) (alpha floored at 1e-8 for the non-exponential schedules)."""
        return -torch.log(self.alpha(t).clamp_min(_SIGMA_FLOOR))

    def importance_transform(self, u: Tensor) -> Tensor:
        """Map u ~ U(0,1) to t with density proportional to w(t); identity = no IS."""
        return u

    def importance_density(self, t: Tensor) -> Tensor:
        """Density q(t) of ``importance_transform(U)`` at t (1 for the identity)."""
        return torch.ones_like(t)

    def loss_weight(self, t: Tensor) -> Tensor:
        """ELBO weight w(t) = -alpha'/(1 - alpha + 1e-8), clamped <= 1000, float32 (§3.4).

        t is clamped to [1e-5, 1]; alpha is evaluated on the float64 copy of t, alpha' on
        the float32 t and then promoted (the legacy dtype path, §3.6).
        """
        t32 = t.to(torch.float32).clamp(T_MIN, 1.0)
        t64 = t32.to(torch.float64)
        w = -self.alpha_prime(t32).to(torch.float64) / (1.0 - self.alpha(t64) + 1e-8)
        return w.clamp_max(W_MAX).to(torch.float32)

    def to_config(self) -> dict[str, Any]:
        raise NotImplementedError


def _scalar(value: float) -> Tensor:
    return torch.tensor(value, dtype=torch.float32)


class LinearSchedule(NoiseSchedule):
    """sigma linear in t: alpha = exp(-(sigma_min + t (sigma_max - sigma_min)))."""

    sigma_min: Tensor
    sigma_max: Tensor
    name = "linear"

    def __init__(self, sigma_min: float = 0.0, sigma_max: float = 10.0) -> None:
        super().__init__()
        if not sigma_max > sigma_min >= 0.0:
            raise BdgenError(f"linear schedule needs 0 <= sigma_min < sigma_max, "
                             f"got {sigma_min}, {sigma_max}")
        self.register_buffer("sigma_min", _scalar(sigma_min))
        self.register_buffer("sigma_max", _scalar(sigma_max))

    def sigma(self, t: Tensor) -> Tensor:
        return self.sigma_min + t * (self.sigma_max - self.sigma_min)

    def alpha(self, t: Tensor) -> Tensor:
        return torch.exp(-self.sigma(t))

    def alpha_prime(self, t: Tensor) -> Tensor:
        return -(self.sigma_max - self.sigma_min) * self.alpha(t)

    def _is_bounds(self, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        s_min = self.sigma_min.to(dtype).clamp_min(1e-4)
        f_t = torch.log1p(-torch.exp(-self.sigma_max.to(dtype)))
        f_0 = torch.log1p(-torch.exp(-s_min))
        return s_min, f_t, f_0

    def importance_transform(self, u: Tensor) -> Tensor:
        _, f_t, f_0 = self._is_bounds(u.dtype)
        sigma_t = -torch.log1p(-torch.exp(u * f_t + (1 - u) * f_0))
        return (sigma_t - self.sigma_min) / (self.sigma_max - self.sigma_min)

    def importance_density(self, t: Tensor) -> Tensor:
        # ln(1 - e^-sigma) is uniform on [f_0, f_T]; d/dsigma of it is 1/(e^sigma - 1).
        s_min, f_t, f_0 = self._is_bounds(t.dtype)
        span = self.sigma_max - self.sigma_min
        sigma_t = self.sigma(t)
        q = span / torch.expm1(sigma_t) / (f_t - f_0)
        inside = (sigma_t >= s_min * (1 - 1e-4)) & (t <= 1.0)
        return torch.where(inside, q, torch.zeros_like(q))

    def to_config(self) -> dict[str, Any]:
        return {"type": "linear", "sigma_min": float(self.sigma_min),
                "sigma_max": float(self.sigma_max)}


class LogLinearSchedule(NoiseSchedule):
    """alpha linear in t: alpha = 1 - (1 - eps) t (the schedule of all recommended v1 runs)."""

    eps: Tensor
    name = "loglinear"

    def __init__(self, eps: float = 1e-3) -> None:
        super().__init__()
        if not 0.0 < eps < 1.0:
            raise BdgenError(f"loglinear schedule needs 0 < eps < 1, got {eps}")
        self.register_buffer("eps", _scalar(eps))

    def alpha(self, t: Tensor) -> Tensor:
        return 1 - (1 - self.eps) * t

    def alpha_prime(self, t: Tensor) -> Tensor:
        return (-(1 - self.eps)).to(t.dtype).expand_as(t)

    def importance_transform(self, u: Tensor) -> Tensor:
        # Closed form of the sigma construction of §3.2: t = (eps / (1 - eps))^(1 - u).
        eps = self.eps.to(u.dtype)
        t = torch.exp((1 - u) * torch.log(eps / (1 - eps)))
        return t.clamp(0.0, 1.0)

    def importance_density(self, t: Tensor) -> Tensor:
        # ln t is uniform on [ln(eps/(1-eps)), 0]  =>  q(t) = 1 / (t ln((1-eps)/eps)).
        eps = self.eps.to(t.dtype)
        log_span = torch.log((1 - eps) / eps)
        lo = eps / (1 - eps)
        q = 1.0 / (t * log_span)
        inside = (t >= lo * (1 - 1e-4)) & (t <= 1.0)
        return torch.where(inside, q, torch.zeros_like(q))

    def to_config(self) -> dict[str, Any]:
        return {"type": "loglinear", "eps": float(self.eps)}


class CosineSchedule(NoiseSchedule):
    """alpha = eps + (1 - eps) cos(pi t / 2); no IS (identity transform)."""

    eps: Tensor
    name = "cosine"

    def __init__(self, eps: float = 1e-3) -> None:
        super().__init__()
        if not 0.0 <= eps < 1.0:
            raise BdgenError(f"cosine schedule needs 0 <= eps < 1, got {eps}")
        self.register_buffer("eps", _scalar(eps))

    def alpha(self, t: Tensor) -> Tensor:
        # eps is promoted to t's dtype first: in float32, f32(eps) + f32(1 - eps) > 1, which
        # made 1 - alpha(t) < 0 and w(t) hugely negative for t < ~1e-4 (a legacy rounding bug).
        eps = self.eps.to(t.dtype)
        return eps + (1 - eps) * torch.cos(math.pi / 2 * t)

    def alpha_prime(self, t: Tensor) -> Tensor:
        eps = self.eps.to(t.dtype)
        return -(1 - eps) * (math.pi / 2) * torch.sin(math.pi / 2 * t)

    def to_config(self) -> dict[str, Any]:
        return {"type": "cosine", "eps": float(self.eps)}


SCHEDULES: dict[str, type[NoiseSchedule]] = {
    "linear": LinearSchedule,
    "loglinear": LogLinearSchedule,
    "cosine": CosineSchedule,
}
DEFAULT_NOISE: dict[str, dict[str, Any]] = {
    "linear": {"type": "linear", "sigma_min": 0.0, "sigma_max": 10.0},
    "loglinear": {"type": "loglinear", "eps": 1e-3},
    "cosine": {"type": "cosine", "eps": 1e-3},
}


def make_schedule(config: dict[str, Any] | str) -> NoiseSchedule:
    """Build a schedule from ``{"type": ..., **params}`` (or a bare type name)."""
    if isinstance(config, str):
        config = {"type": config}
    params = dict(config)
    kind = params.pop("type", None)
    if kind not in SCHEDULES:
        raise BdgenError(f"unknown noise schedule type {kind!r}; valid: "
                         f"{', '.join(SCHEDULES)} (v2 uses 'learned')")
    try:
        return SCHEDULES[kind](**params)
    except TypeError as exc:
        raise BdgenError(f"bad parameters for noise schedule {kind!r}: {params} ({exc})") from None
