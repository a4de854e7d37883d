"""Energy, reward and candidate weights (G3.1, G4.3 step 7).

``E(x) = sum_c (lambda_c / p90_c) * phi(v_c(x))`` and ``r(x) = -E(x)``; phi shapes the
violation before the normaliser divides it (quadratic gives ``lambda v^2 / p90``). The sum
runs in constraint order, one term at a time (not a vectorised reduction over c), so its
rounding is the same for a batch as for one sample. With non-negative weights ``r <= 0``,
and a hard reward is 0 exactly when every constraint is satisfied.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from bdgen.errors import BdgenError
from bdgen.guidance.constraints import ConstraintSet
from bdgen.guidance.names import PHIS

_TENSOR_PHI: dict[str, Callable[[Tensor], Tensor]] = {
    "linear": lambda v: v, "quadratic": lambda v: v * v, "log1p": torch.log1p}
_FLOAT_PHI: dict[str, Callable[[float], float]] = {
    "linear": lambda v: v, "quadratic": lambda v: v * v, "log1p": math.log1p}
assert tuple(_TENSOR_PHI) == tuple(_FLOAT_PHI) == PHIS


def _check_phi(phi: str) -> None:
    if phi not in PHIS:
        raise BdgenError(f"unknown phi {phi!r}; valid: {', '.join(PHIS)}")


def energy(violations: Tensor, cs: ConstraintSet, phi: str = "linear") -> Tensor:
    """``[...]`` float64 energy of ``[..., C]`` violations (soft or hard)."""
    _check_phi(phi)
    if violations.shape[-1] != len(cs):
        raise BdgenError(f"{violations.shape[-1]} violations for {len(cs)} constraints")
    shaped = _TENSOR_PHI[phi]
    e = torch.zeros(violations.shape[:-1], dtype=torch.float64, device=violations.device)
    for c, coef in enumerate(cs.coefficients()):
        e = e + coef * shaped(violations[..., c].to(torch.float64))
    return e


def reward(violations: Tensor, cs: ConstraintSet, phi: str = "linear") -> Tensor:
    """``-energy``: higher is better, 0 is the best."""
    return -energy(violations, cs, phi)


def energy_of(violations: Sequence[float], cs: ConstraintSet, phi: str = "linear") -> float:
    """The energy of one sample's violations, as a Python float (hard mode)."""
    _check_phi(phi)
    if len(violations) != len(cs):
        raise BdgenError(f"{len(violations)} violations for {len(cs)} constraints")
    shaped = _FLOAT_PHI[phi]
    e = 0.0
    for v, coef in zip(violations, cs.coefficients()):
        e = e + coef * shaped(float(v))
    return e


def candidate_weights(rewards: Tensor, alpha: float, dim: int = 0) -> Tensor:
    """Importance weights ``softmax(r / alpha)`` over the candidates (``dim``), float64."""
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
        raise BdgenError(f"alpha must be a finite number > 0, got {alpha!r}")
    return torch.softmax(rewards.to(torch.float64) / alpha, dim=dim)


def effective_sample_size(weights: Tensor, dim: int = 0) -> Tensor:
    """``1 / sum_k w_k^2`` (1 .. K)."""
    return 1.0 / (weights * weights).sum(dim)
