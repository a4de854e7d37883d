"""The v1 ELBO (spec §3.4): PAD contributes nothing, finite gradients, joint normalisation."""

from __future__ import annotations

import math

import pytest
import torch
from _model_support import randomised

from bdgen.data.graph import Graph, tokenize_many
from bdgen.data.vocab import RPLAN_VOCAB
from bdgen.diffusion.forward import forward_mask
from bdgen.diffusion.loss import ELBOLoss, masked_accuracy, per_sample_ce
from bdgen.diffusion.schedules import LogLinearSchedule
from bdgen.model.denoiser import MODEL_PRESETS
from bdgen.model.fast_forward import FastDenoiser

GRAPHS = [
    Graph((0, 2, 3, 9), ((0, 1, 2), (0, 2, 7), (1, 3, 4))),
    Graph((0, 1, 7, 7, 3, 2), ((0, 1, 2), (0, 5, 6), (2, 3, 7))),
    Graph((0, 3), ((0, 1, 5),)),
]


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    tokens, pads = tokenize_many(GRAPHS, RPLAN_VOCAB)
    return torch.from_numpy(tokens), torch.from_numpy(pads)


def test_pad_positions_contribute_exactly_zero() -> None:
    x0, pads = _data()
    torch.manual_seed(1)
    node_logits = torch.randn(3, 8, 15)
    edge_logits = torch.randn(3, 28, 13)
    mask = torch.ones_like(pads)  # "masked" everywhere, PAD included: the loss must ignore PAD
    weights = torch.rand(13) + 0.5
    base = per_sample_ce(node_logits, edge_logits, x0, mask & pads, weights)
    node2, edge2 = node_logits.clone(), edge_logits.clone()
    node2[~pads[:, :8]] = 100.0
    edge2[~pads[:, 8:]] = -100.0
    assert torch.equal(per_sample_ce(node2, edge2, x0, mask & pads, weights), base)
    loss = ELBOLoss(LogLinearSchedule(), weights)
    t = torch.tensor([0.2, 0.5, 0.9])
    assert torch.equal(loss(node_logits, edge_logits, x0, pads, mask, t).loss,
                       loss(node2, edge2, x0, pads, mask, t).loss)


def test_joint_normalisation_by_hand() -> None:
    x0, pads = _data()
    node_logits = torch.zeros(3, 8, 15)
    node_logits[..., 13:] = float("-inf")
    edge_logits = torch.zeros(3, 28, 13)
    edge_logits[..., 11:] = float("-inf")
    weights = torch.ones(13)
    weights[10] = 0.25
    mask = torch.zeros_like(pads)
    mask[0, 0] = mask[0, 1] = True            # two room slots
    mask[0, 8 + RPLAN_VOCAB.pair_to_pos(0, 1)] = True   # edge (0,1) = relation 2
    mask[0, 8 + RPLAN_VOCAB.pair_to_pos(0, 3)] = True   # edge (0,3) = no-edge (weight 0.25)
    ce = per_sample_ce(node_logits, edge_logits, x0, mask & pads, weights)
    expected = (2 * math.log(13) + math.log(11) + 0.25 * math.log(11)) / 4
    assert ce[0].item() == pytest.approx(expected, rel=1e-6)
    assert ce[1].item() == 0.0 and ce[2].item() == 0.0   # nothing masked -> 0, not NaN


def test_loss_gradients_are_finite_with_subs_logits() -> None:
    x0, pads = _data()
    model = randomised(FastDenoiser, MODEL_PRESETS["tiny"]).train()
    t = torch.tensor([1e-6, 0.5, 1.0])
    gen = torch.Generator().manual_seed(0)
    x_t, mask = forward_mask(x0, pads, torch.full((3, 1), 0.3), generator=gen)
    node_logits, edge_logits = model(x_t, pads, t)
    assert torch.isneginf(node_logits).any()   # the -inf SUBS logits are really there
    out = ELBOLoss(LogLinearSchedule(), torch.rand(13) + 0.1)(
        node_logits, edge_logits, x0, pads, mask, t)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert (out.weight <= 1000).all() and out.weight[0] == 1000
    for p in model.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


def test_initial_loss_is_uniform_ce() -> None:
    """At init every masked room costs ln 13 and every masked edge ln 11 (unit weights)."""
    x0, pads = _data()
    model = FastDenoiser(MODEL_PRESETS["small"], RPLAN_VOCAB)
    x_t, mask = forward_mask(x0, pads, torch.zeros(3, 1))  # everything real is masked
    node_logits, edge_logits = model(x_t, pads, 1.0)
    ce = per_sample_ce(node_logits, edge_logits, x0, mask & pads, torch.ones(13))
    rooms = torch.tensor([4, 6, 2])
    edges = rooms * (rooms - 1) // 2
    expected = (rooms * math.log(13) + edges * math.log(11)) / (rooms + edges)
    torch.testing.assert_close(ce, expected.float())


def test_weighting_and_is_factor() -> None:
    x0, pads = _data()
    logits_n, logits_e = torch.randn(3, 8, 15), torch.randn(3, 28, 13)
    mask = pads.clone()
    loss = ELBOLoss(LogLinearSchedule(), torch.ones(13))
    t = torch.tensor([0.1, 0.5, 1.0])
    plain = loss(logits_n, logits_e, x0, pads, mask, t)
    torch.testing.assert_close(plain.loss, (plain.weight * plain.per_sample).mean())
    factor = torch.tensor([2.0, 0.5, 1.0])
    scaled = loss(logits_n, logits_e, x0, pads, mask, t, factor)
    torch.testing.assert_close(scaled.loss, (plain.weight * factor * plain.per_sample).mean())


def test_masked_accuracy_counts() -> None:
    x0, pads = _data()
    node_logits = torch.nn.functional.one_hot(x0[:, :8].clamp_max(14), 15).float()
    edge_logits = torch.zeros(3, 28, 13)
    mask = pads.clone()
    counts = masked_accuracy(node_logits, edge_logits, x0, mask)
    n_nodes, n_edges = int(pads[:, :8].sum()), int(pads[:, 8:].sum())
    n_edge_class0 = int(((x0[:, 8:] == 0) & pads[:, 8:]).sum())
    assert counts.tolist() == [n_nodes, n_nodes, n_edge_class0, n_edges]
