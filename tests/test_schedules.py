"""Noise schedules, importance sampling and forward masking (spec §3.1-3.3, §3.6, App. D)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bdgen.data.graph import Graph, tokenize_many
from bdgen.data.vocab import EDGE_MASK, NODE_MASK, RPLAN_VOCAB
from bdgen.diffusion.forward import forward_mask, mask_tokens, n_max_from_seq_len
from bdgen.diffusion.loss import sample_t
from bdgen.diffusion.schedules import (
    W_MAX,
    CosineSchedule,
    LinearSchedule,
    LogLinearSchedule,
    make_schedule,
)
from bdgen.errors import BdgenError

F64 = torch.float64


def _t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


def test_endpoints_and_appendix_d_values() -> None:
    lin, loglin, cos = LinearSchedule(), LogLinearSchedule(), CosineSchedule()
    assert lin.alpha(_t(1.0)).item() == pytest.approx(math.exp(-10), rel=1e-6)
    assert lin.alpha(_t(0.0)).item() == 1.0 and loglin.alpha(_t(0.0)).item() == 1.0
    assert loglin.alpha(_t(1.0)).item() == pytest.approx(1e-3, rel=1e-4)
    assert cos.alpha(_t(1.0)).item() == pytest.approx(1e-3, rel=1e-4)
    np.testing.assert_allclose(lin.alpha(_t(0.1, 0.3, 0.5, 0.7)).numpy(),
                               [0.368, 0.0498, 0.0067, 9.1e-4], rtol=1e-2)
    np.testing.assert_allclose(lin.loss_weight(_t(0.1, 0.3, 0.5, 0.7, 1.0)).numpy(),
                               [5.82, 0.524, 0.068, 0.0091, 4.5e-4], rtol=1e-2)
    assert lin.loss_weight(_t(0.01)).item() == pytest.approx(95, rel=0.01)
    t = _t(0.01, 0.1, 0.5, 0.9)
    np.testing.assert_allclose(loglin.loss_weight(t).numpy(), (1 / t).numpy(), rtol=2e-3)


def test_float32_constants_and_float64_evaluation() -> None:
    loglin = LogLinearSchedule()
    assert loglin.eps.dtype == torch.float32
    slope = float(torch.tensor(1.0, dtype=torch.float32) - torch.tensor(1e-3, dtype=torch.float32))
    assert slope != 0.999
    alpha = loglin.alpha(_t(1.0))
    assert alpha.dtype == F64 and alpha.item() == 1.0 - slope
    assert loglin.loss_weight(torch.tensor([0.5])).dtype == torch.float32


@pytest.mark.parametrize("schedule", [LinearSchedule(), LogLinearSchedule(), CosineSchedule()])
def test_alpha_prime_matches_finite_differences(schedule) -> None:
    t = torch.linspace(0.05, 0.95, 19, dtype=F64)
    h = 1e-6
    numeric = (schedule.alpha(t + h) - schedule.alpha(t - h)) / (2 * h)
    np.testing.assert_allclose(schedule.alpha_prime(t).numpy(), numeric.numpy(), rtol=1e-5)
    assert (schedule.alpha(t[1:]) < schedule.alpha(t[:-1])).all()


def test_weight_clamp() -> None:
    for schedule in (LinearSchedule(), LogLinearSchedule(), CosineSchedule()):
        w = schedule.loss_weight(torch.tensor([0.0, 1e-7, 1e-5, 1e-4, 0.5]))
        assert (w <= W_MAX).all() and (w >= 0).all() and torch.isfinite(w).all()
        assert w[0] == W_MAX


def test_importance_transforms() -> None:
    u = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=F64)
    np.testing.assert_allclose(LogLinearSchedule().importance_transform(u).numpy(),
                               [0.0010, 0.0056, 0.0316, 0.178, 1.0], rtol=2e-2)
    lin = LinearSchedule().importance_transform(u)
    assert lin[0].item() == pytest.approx(1e-5, rel=1e-3)
    assert lin[2].item() == pytest.approx(1e-3, rel=0.1)
    assert lin[-1].item() == pytest.approx(1.0)
    assert torch.equal(CosineSchedule().importance_transform(u), u)


@pytest.mark.parametrize("schedule", [LinearSchedule(), LogLinearSchedule()])
def test_importance_density_integrates_to_one_and_is_proportional_to_w(schedule) -> None:
    lo = schedule.importance_transform(torch.zeros(1, dtype=F64)).item()
    t = torch.logspace(math.log10(lo), 0, 200_001, dtype=F64)
    q = schedule.importance_density(t)
    assert torch.trapezoid(q, t).item() == pytest.approx(1.0, rel=1e-4)
    w = -schedule.alpha_prime(t) / (1 - schedule.alpha(t))
    ratio = w / q
    assert (ratio.max() / ratio.min()).item() == pytest.approx(1.0, rel=1e-3)
    assert schedule.importance_density(_t(lo / 2)).item() == 0.0


@pytest.mark.parametrize("schedule", [LinearSchedule(), LogLinearSchedule()])
def test_unbiased_is_matches_uniform_t_expectation(schedule) -> None:
    """E_q[w CE / q] equals the uniform-t objective E_U[w CE] on the IS support."""
    def ce(t: torch.Tensor) -> torch.Tensor:  # any smooth per-sample CE as a function of t
        return 2.0 + torch.sin(3.0 * t) - t

    torch.manual_seed(0)
    t, factor = sample_t(schedule, 400_000, "unbiased", "cpu")
    estimate = (schedule.loss_weight(t).double() * factor.double() * ce(t.double())).mean()
    # Uniform-t expectation by the midpoint rule on a dense grid (on the support t >= lo).
    lo = float(schedule.importance_transform(torch.zeros(1)).clamp_min(1e-5))
    n = 4_000_000
    grid = (torch.arange(n, dtype=F64) + 0.5) / n
    grid = grid[grid >= lo]
    uniform = (schedule.loss_weight(grid).double() * ce(grid)).sum() / n
    assert estimate.item() == pytest.approx(uniform.item(), rel=1e-2)
    # The legacy objective (no 1/q) is a different, much larger quantity.
    _, ones = sample_t(schedule, 1000, "legacy", "cpu")
    assert torch.equal(ones, torch.ones(1000))


def test_sample_t_modes() -> None:
    torch.manual_seed(0)
    t, f = sample_t(LogLinearSchedule(), 10_000, "off", "cpu")
    assert t.min() >= 1e-5 and t.max() <= 1 and abs(t.mean().item() - 0.5) < 0.02
    assert torch.equal(f, torch.ones_like(f))
    t, f = sample_t(LogLinearSchedule(), 10_000, "unbiased", "cpu")
    assert t.min() >= 1e-3 * 0.999 and (t < 0.0316).float().mean().item() == pytest.approx(
        0.5, abs=0.02)
    assert (f > 0).all() and torch.isfinite(f).all()
    with pytest.raises(ValueError):
        sample_t(LogLinearSchedule(), 4, "w2", "cpu")


def test_make_schedule() -> None:
    assert isinstance(make_schedule({"type": "loglinear", "eps": 1e-3}), LogLinearSchedule)
    assert make_schedule("linear").to_config() == {"type": "linear", "sigma_min": 0.0,
                                                   "sigma_max": 10.0}
    cfg = make_schedule({"type": "cosine", "eps": 0.01}).to_config()
    assert cfg["type"] == "cosine" and cfg["eps"] == pytest.approx(0.01)
    with pytest.raises(BdgenError, match="linear, loglinear, cosine"):
        make_schedule({"type": "quadratic"})
    with pytest.raises(BdgenError):
        make_schedule({"type": "loglinear", "sigma": 1})


def test_forward_mask_never_masks_pad_and_rate_matches_alpha() -> None:
    graphs = [Graph((0,) * n, ()) for n in (1, 3, 5, 8)] * 250
    tokens, pads = (torch.from_numpy(a) for a in tokenize_many(graphs, RPLAN_VOCAB))
    gen = torch.Generator().manual_seed(0)
    for alpha_value in (0.9, 0.5, 0.1):
        alpha = torch.full((len(graphs), 1), alpha_value)
        x_t, mask = forward_mask(tokens, pads, alpha, generator=gen)
        assert not (mask & ~pads).any()
        assert torch.equal(x_t[~pads], tokens[~pads])
        assert torch.equal(x_t[~mask], tokens[~mask])
        assert (x_t[:, :8][mask[:, :8]] == NODE_MASK).all()
        assert (x_t[:, 8:][mask[:, 8:]] == EDGE_MASK).all()
        rate = mask[pads].float().mean().item()
        assert rate == pytest.approx(1 - alpha_value, abs=0.01)
    # Per-position alpha [B, S].
    alpha = torch.zeros(len(graphs), 36)
    alpha[:, 8:] = 1.0
    _, mask = forward_mask(tokens, pads, alpha, generator=gen)
    assert mask[:, :8].equal(pads[:, :8]) and not mask[:, 8:].any()


def test_mask_token_layout() -> None:
    assert n_max_from_seq_len(36) == 8 and n_max_from_seq_len(105) == 14
    with pytest.raises(ValueError):
        n_max_from_seq_len(35)
    mt = mask_tokens(36)
    assert (mt[:8] == NODE_MASK).all() and (mt[8:] == EDGE_MASK).all()


def test_cosine_weight_near_zero_is_the_clamp_not_the_original_negative_value() -> None:
    """README "deliberate differences": the original's float32 eps made alpha(0) > 1 and
    w(t) = -8806.9 for t <= 1e-5 (negative up to t ~ 4.9e-5); bdgen gives alpha(0) = 1,
    w = 1000 there, and w(0.01) = 199.9797 (original: 200.0006)."""
    s = make_schedule("cosine")
    assert s.alpha(torch.zeros(1, dtype=torch.float64)).item() == 1.0
    w = s.loss_weight(torch.tensor([0.0, 1e-5, 4e-5, 1e-4, 0.01]))
    assert w[:4].tolist() == [1000.0] * 4
    assert w[4].item() == pytest.approx(199.9797, abs=1e-4)
    eps = torch.tensor(1e-3)  # the original's dtype path, for the record
    t = torch.tensor([1e-5], dtype=torch.float64)
    alpha = eps + (1 - eps) * torch.cos(math.pi / 2 * t)
    w_orig = (1 - eps) * (math.pi / 2) * torch.sin(math.pi / 2 * t.float()) / (1 - alpha + 1e-8)
    assert w_orig.item() == pytest.approx(-8806.94, abs=0.01)
