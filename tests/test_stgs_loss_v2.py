"""v2 training-time forward process (STGS) and the per-position ELBO (spec §4.2-§4.3)."""

from __future__ import annotations

import math

import pytest
import torch
from _model_support import V2_VOCAB as VOCAB
from _model_support import v2_batch

from bdgen.data.vocab import EDGE_MASK, NODE_MASK
from bdgen.diffusion.loss import PerPositionELBOLoss, per_position_weight
from bdgen.diffusion.rate_network import RateNetwork
from bdgen.diffusion.stgs import (
    anneal_progress,
    forward_mask_eval_learned,
    gumbel_temperature,
    stgs_forward,
    straight_through_mask,
)
from bdgen.errors import BdgenError
from bdgen.model.denoiser import MODEL_PRESETS
from bdgen.model.fast_forward import FastDenoiser


def _nets(seed: int = 0) -> tuple[FastDenoiser, RateNetwork]:
    torch.manual_seed(seed)
    return FastDenoiser(MODEL_PRESETS["tiny"], VOCAB), RateNetwork(vocab=VOCAB)


def _loss_fn() -> PerPositionELBOLoss:
    return PerPositionELBOLoss(edge_class_weights=torch.linspace(0.5, 1.5, 13))


def test_straight_through_values_are_hard_and_pad_is_kept() -> None:
    x0, pad = v2_batch()
    alpha = torch.rand(pad.shape, requires_grad=True)
    p = straight_through_mask(alpha, pad, tau=0.7, generator=torch.Generator().manual_seed(1))
    assert p.shape == (*pad.shape, 2) and p.dtype == torch.float32
    assert torch.isin(p.detach(), torch.tensor([0.0, 1.0])).all()
    assert torch.equal(p.detach().sum(-1), torch.ones(pad.shape))
    assert (p[..., 1][~pad] == 0).all()
    p[..., 1].sum().backward()
    assert alpha.grad is not None and alpha.grad.abs().sum() > 0
    assert (alpha.grad[~pad] == 0).all()  # PAD override removes the gradient


def test_masking_rate_follows_alpha_and_pad_never_masked() -> None:
    x0, pad = v2_batch(repeat=64)
    alpha = torch.full(pad.shape, 0.3)
    gen = torch.Generator().manual_seed(0)
    for tau in (1.0, 0.1):
        p = straight_through_mask(alpha, pad, tau, gen)
        rate = p[..., 1][pad].mean().item()
        assert rate == pytest.approx(0.7, abs=0.03)  # argmax of Gumbel-perturbed logits
    x_t, mask = forward_mask_eval_learned(x0, pad, alpha, gen)
    assert not mask[~pad].any()
    assert mask[pad].float().mean().item() == pytest.approx(0.7, abs=0.03)
    assert torch.equal(x_t[~mask], x0[~mask])
    with pytest.raises(ValueError):
        forward_mask_eval_learned(x0, pad, alpha[:, :1])


def test_stgs_forward_tokens_embeddings_and_gradients() -> None:
    denoiser, rate = _nets()
    x0, pad = v2_batch()
    t = torch.rand(x0.shape[0])
    rates = rate.rates(t, pad)
    sample = stgs_forward(denoiser, x0, pad, rates.alpha, tau=0.5,
                          generator=torch.Generator().manual_seed(2))
    assert not sample.mask[~pad].any()
    n = VOCAB.n_max
    masked = sample.mask
    assert (sample.x_t[:, :n][masked[:, :n]] == NODE_MASK).all()
    assert (sample.x_t[:, n:][masked[:, n:]] == EDGE_MASK).all()
    assert torch.equal(sample.x_t[~masked], x0[~masked])
    # the forward value of the soft embedding equals the discrete embedding of x_t
    assert torch.allclose(sample.embeddings, denoiser.embed(sample.x_t), atol=1e-6)
    node_logits, edge_logits = denoiser(x0, pad, t, pre_embedded=sample.embeddings)
    out = _loss_fn()(node_logits, edge_logits, x0, pad, sample.mask, rates.alpha,
                     rates.alpha_prime)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert denoiser.node_head.weight.grad.abs().sum() > 0
    assert denoiser.node_embedding.weight.grad is not None
    for name, prm in rate.named_parameters():
        assert prm.grad is not None and torch.isfinite(prm.grad).all(), name
        assert prm.grad.abs().sum() > 0, name


def test_embeddings_carry_rate_network_gradient() -> None:
    """Gradient path (2) of §4.3: STGS soft embeddings -> denoiser -> CE -> rate network."""
    denoiser, rate = _nets(1)
    for head in (denoiser.node_head, denoiser.edge_head):  # non-zero heads: CE depends on x
        torch.nn.init.normal_(head.weight, std=0.5)
    x0, pad = v2_batch()
    t = torch.full((x0.shape[0],), 0.6)
    alpha = rate(t, pad)
    sample = stgs_forward(denoiser, x0, pad, alpha, tau=1.0,
                          generator=torch.Generator().manual_seed(3))
    node_logits, _ = denoiser(x0, pad, t, pre_embedded=sample.embeddings)
    node_logits[..., :13].sum().backward()  # no w term at all: only the embedding path
    assert rate.node_table.weight.grad.abs().sum() > 0


def test_per_position_weight_and_pad_contribute_zero() -> None:
    alpha = torch.tensor([[1.0, 0.5, 0.99999, 0.0]])
    alpha_prime = torch.tensor([[0.0, -1.0, -1.0, -2.0]])
    w = per_position_weight(alpha, alpha_prime)
    assert w.dtype == torch.float32
    assert w[0, 0] == 0.0
    assert w[0, 1].item() == pytest.approx(2.0, rel=1e-6)
    assert w[0, 2].item() == 1000.0  # clamped
    assert w[0, 3].item() == pytest.approx(2.0, rel=1e-6)

    denoiser, rate = _nets(2)
    x0, pad = v2_batch()
    t = torch.rand(x0.shape[0])
    rates = rate.rates(t, pad)
    node_logits, edge_logits = denoiser(x0, pad, t)
    loss = _loss_fn()
    everything = torch.ones_like(pad)  # "masked" everywhere, but PAD must still not count
    out = loss(node_logits, edge_logits, x0, pad, everything, rates.alpha, rates.alpha_prime)
    out_real = loss(node_logits, edge_logits, x0, pad, pad, rates.alpha, rates.alpha_prime)
    assert torch.equal(out.loss, out_real.loss)
    # at init every CE is ln 13 (nodes) / class-weighted ln 11 (edges): check the node part
    n = VOCAB.n_max
    w = per_position_weight(rates.alpha, rates.alpha_prime).detach()
    expect_nodes = (w[:, :n] * pad[:, :n]).sum(1) * math.log(13) / pad[:, :n].sum(1)
    assert torch.allclose(out.nodes, expect_nodes, rtol=1e-5)
    no_edges = PerPositionELBOLoss(torch.ones(13), lambda_edge=0.0)
    lam = no_edges(node_logits, edge_logits, x0, pad, pad, rates.alpha, rates.alpha_prime)
    assert torch.allclose(lam.loss, out.nodes.mean())


def test_elbo_is_finite_and_decreases_on_tiny_model() -> None:
    denoiser, rate = _nets(4)
    x0, pad = v2_batch(repeat=4)
    params = list(denoiser.parameters()) + list(rate.parameters())
    opt = torch.optim.AdamW(params, lr=3e-3, weight_decay=0.01)
    loss_fn = _loss_fn()
    probe_t = torch.linspace(0.05, 0.95, x0.shape[0])

    def probe() -> float:
        """The objective on fixed t and fixed Gumbel noise (so the comparison is fair)."""
        with torch.no_grad():
            rates = rate.rates(probe_t, pad)
            s = stgs_forward(denoiser, x0, pad, rates.alpha, 0.5, torch.Generator().manual_seed(9))
            logits = denoiser(x0, pad, probe_t, pre_embedded=s.embeddings)
            return loss_fn(*logits, x0, pad, s.mask, rates.alpha, rates.alpha_prime).loss.item()

    before = probe()
    gen = torch.Generator().manual_seed(0)
    steps = 40
    for step in range(steps):
        t = torch.rand(x0.shape[0], generator=gen).clamp_min(1e-5)
        tau = gumbel_temperature(anneal_progress(step, steps))
        rates = rate.rates(t, pad)
        s = stgs_forward(denoiser, x0, pad, rates.alpha, tau, gen)
        out = loss_fn(*denoiser(x0, pad, t, pre_embedded=s.embeddings), x0, pad, s.mask,
                      rates.alpha, rates.alpha_prime)
        assert torch.isfinite(out.loss)
        opt.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
    after = probe()
    assert math.isfinite(after) and after < 0.8 * before


def test_gumbel_temperature_schedules() -> None:
    assert anneal_progress(0, 10) == 0.0 and anneal_progress(9, 10) == 1.0
    assert anneal_progress(0, 1) == 0.0
    assert gumbel_temperature(0.0) == 1.0
    assert gumbel_temperature(1.0) == pytest.approx(0.1)
    assert gumbel_temperature(0.5) == pytest.approx(0.55)
    assert gumbel_temperature(0.0, schedule="cosine") == pytest.approx(1.0)
    assert gumbel_temperature(1.0, schedule="cosine") == pytest.approx(0.1)
    assert gumbel_temperature(0.5, schedule="cosine") == pytest.approx(0.55)
    assert gumbel_temperature(0.7, schedule="constant") == 1.0
    with pytest.raises(BdgenError, match="unknown Gumbel temperature schedule"):
        gumbel_temperature(0.5, schedule="exp")
