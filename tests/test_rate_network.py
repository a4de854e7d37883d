"""Rate-network invariants (spec §4.1, §11 item 7)."""

from __future__ import annotations

import math

import pytest
import torch

from bdgen.data.vocab import VocabConfig
from bdgen.diffusion.rate_network import (
    RateNetwork,
    RateNetworkConfig,
    rate_network_param_count,
)
from bdgen.errors import BdgenError

VOCAB = VocabConfig(8)


def _net(seed: int = 0) -> RateNetwork:
    torch.manual_seed(seed)
    return RateNetwork(RateNetworkConfig(), VOCAB)


def _pad_mask(rooms: list[int]) -> torch.Tensor:
    return torch.as_tensor(VOCAB.pad_mask_table[rooms])


def test_parameter_count_is_4740() -> None:
    net = _net()
    assert sum(p.numel() for p in net.parameters()) == 4740
    assert rate_network_param_count() == 4740
    bigger = RateNetworkConfig(d_emb=16, K=3, hidden_dim=8)
    assert sum(p.numel() for p in RateNetwork(bigger, VOCAB).parameters()) == (
        rate_network_param_count(bigger)
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_alpha_strictly_decreasing_with_endpoints(seed: int) -> None:
    net = _net(seed)
    with torch.no_grad():
        t = torch.linspace(0.0, 1.0, 201)
        rates = net.rates(t)
        alpha = rates.alpha  # [T, S]
        assert alpha.shape == (201, VOCAB.seq_len)
        assert alpha.dtype == torch.float32
        # γ is strictly increasing everywhere; float32 cannot resolve the ~1e-7 steps of α near
        # α = 1, so α is checked non-increasing everywhere and strictly decreasing below 0.999.
        assert (rates.gamma[1:] > rates.gamma[:-1]).all()
        assert (alpha[1:] <= alpha[:-1]).all()
        resolvable = alpha[:-1] < 0.999
        assert resolvable.sum() > 100
        assert (alpha[1:][resolvable] < alpha[:-1][resolvable]).all()
        assert (rates.alpha_prime < 0).all()
        assert (net(0.0) > 0.99).all()
        assert (net(1.0) < 0.02).all()
        assert net(0.0)[0, 0].item() == pytest.approx(1 / (1 + math.exp(-13.0)), abs=1e-6)
        assert net(1.0)[0, 0].item() == pytest.approx(1 / (1 + math.exp(5.0)), rel=1e-4)


def test_pad_positions_have_alpha_one_and_zero_derivative() -> None:
    net = _net()
    pad = _pad_mask([3, 5, 8, 1])
    t = torch.tensor([0.1, 0.5, 0.9, 0.99])
    rates = net.rates(t, pad)
    assert (rates.alpha[~pad] == 1.0).all()
    assert (rates.alpha_prime[~pad] == 0.0).all()
    assert (rates.gamma[~pad] == -13.0).all()
    # real positions are unaffected by the mask
    free = net.rates(t)
    assert torch.equal(rates.alpha[pad], free.alpha[pad])
    assert (rates.alpha_prime[pad] < 0).all()


def test_analytic_derivative_matches_finite_differences() -> None:
    net = _net(3)
    h = 1e-3
    t = torch.linspace(0.02, 0.98, 49, dtype=torch.float64)
    with torch.no_grad():
        analytic = net.rates(t.float()).alpha_prime.double()
        # central difference on float64 inputs rounded to float32 by the network
        plus = net((t + h).float()).double()
        minus = net((t - h).float()).double()
        steps = ((t + h).float().double() - (t - h).float().double())[:, None]
        numeric = (plus - minus) / steps
    assert torch.allclose(analytic, numeric, rtol=2e-2, atol=5e-4)
    # and with autograd through t
    tt = torch.full((1,), 0.37, requires_grad=True)
    a = net(tt)
    grads = torch.stack([torch.autograd.grad(a[0, s], tt, retain_graph=True)[0][0]
                         for s in (0, 20)])
    analytic1 = net.rates(torch.tensor([0.37])).alpha_prime[0, [0, 20]]
    assert torch.allclose(grads, analytic1.detach(), rtol=1e-4, atol=1e-6)


def test_schedule_depends_on_position_not_batch() -> None:
    net = _net()
    alpha = net(torch.tensor([0.6, 0.6]))
    assert torch.equal(alpha[0], alpha[1])
    # edge slots (i, j) and (j, i) share H[i] + H[j]; distinct positions differ in general
    assert alpha[0].unique().numel() > 1


def test_time_argument_forms() -> None:
    net = _net()
    pad = _pad_mask([4, 6])
    a = net(0.5, pad)
    b = net(torch.tensor(0.5), pad)
    c = net(torch.tensor([0.5, 0.5]), pad)
    d = net(torch.tensor([[0.5], [0.5]]), pad)
    assert a.shape == (2, VOCAB.seq_len)
    assert torch.equal(a, b) and torch.equal(a, c) and torch.equal(a, d)
    with pytest.raises(ValueError):
        net(torch.tensor([0.1, 0.2, 0.3]), pad)


def test_gradients_reach_every_parameter() -> None:
    net = _net()
    rates = net.rates(torch.rand(4), _pad_mask([4, 5, 6, 8]))
    (rates.alpha.sum() + rates.alpha_prime.sum()).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_config_round_trip_and_errors() -> None:
    cfg = RateNetworkConfig(d_emb=16, K=3, gamma_min=-10.0, gamma_max=4.0, hidden_dim=8)
    assert RateNetworkConfig.from_dict(cfg.to_dict()) == cfg
    assert RateNetworkConfig.from_dict({"type": "learned"}) == RateNetworkConfig()
    with pytest.raises(BdgenError, match="unknown rate network config keys"):
        RateNetworkConfig.from_dict({"d_emb": 8, "dim": 3})
    with pytest.raises(BdgenError, match="gamma_min < gamma_max"):
        RateNetworkConfig(gamma_min=5.0, gamma_max=-13.0)
    with pytest.raises(BdgenError, match="expected 'learned'"):
        RateNetworkConfig.from_dict({"type": "loglinear"})


def test_state_dict_round_trip() -> None:
    net = _net(5)
    clone = RateNetwork(RateNetworkConfig.from_dict(net.config.to_dict()), VOCAB)
    clone.load_state_dict(net.state_dict())
    t = torch.rand(3)
    assert torch.equal(net(t), clone(t))
