"""Denoising metrics (spec §6.11): seeded, scored on masked real positions only."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bdgen.data.dataset import prepare_synthetic
from bdgen.data.vocab import N_ROOM_TYPES, RPLAN_VOCAB
from bdgen.diffusion.forward import forward_mask
from bdgen.diffusion.process import ScheduleProcess
from bdgen.diffusion.schedules import make_schedule
from bdgen.eval.denoising import denoising_metrics
from bdgen.eval.registry import DENOISING_T_GRID, lookup
from bdgen.model.denoiser import MODEL_PRESETS
from bdgen.model.fast_forward import FastDenoiser

V = RPLAN_VOCAB


@pytest.fixture(scope="module")
def val():
    return prepare_synthetic(600, seed=2).split("val")


class ConstantModel(nn.Module):
    """Always predicts room type 2 and relation 5 (a real module with one parameter)."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(5.0))

    def forward(self, tokens, pad_mask, t):
        b = tokens.shape[0]
        node = torch.zeros(b, V.n_max, 15)
        node[..., 2] = self.scale
        edge = torch.zeros(b, V.n_edges, 13)
        edge[..., 5] = self.scale
        return node, edge


def test_keys_order_and_initial_model_values(val):
    torch.manual_seed(0)
    model = FastDenoiser(MODEL_PRESETS["tiny"], V)
    alpha = ScheduleProcess(make_schedule({"type": "loglinear", "eps": 1e-3})).alpha
    m = denoising_metrics(model, alpha, val, batch_size=16, max_batches=3)
    assert list(m) == [f"denoise/{q}@t={t:.1f}" for t in DENOISING_T_GRID
                       for q in ("acc_node", "acc_edge", "ce_node", "ce_edge")]
    assert all(lookup(k).group == "denoising" for k in m)
    # At initialisation every non-MASK/PAD logit is 0 (spec §11 item 4): uniform CE.
    for t in DENOISING_T_GRID:
        assert m[f"denoise/ce_node@t={t:.1f}"] == pytest.approx(math.log(N_ROOM_TYPES))
        assert m[f"denoise/ce_edge@t={t:.1f}"] == pytest.approx(math.log(11))
    assert m == denoising_metrics(model, alpha, val, batch_size=16, max_batches=3)
    assert model.training  # the caller's mode is restored


def test_scoring_uses_masked_real_positions_only(val):
    model = ConstantModel()
    alpha = ScheduleProcess(make_schedule({"type": "linear"})).alpha
    m = denoising_metrics(model, alpha, val, t_grid=(0.3,), batch_size=10, max_batches=4,
                          seed=7)
    gen = torch.Generator().manual_seed(7)
    hits_n = hits_e = n_n = n_e = 0
    for start in range(0, 40, 10):
        x0, pad = val.tokens[start:start + 10], val.pad_mask[start:start + 10]
        t = torch.full((len(x0),), 0.3)
        _, mask = forward_mask(x0, pad, alpha(t, pad), generator=gen)
        nodes, edges = x0[:, : V.n_max][mask[:, : V.n_max]], x0[:, V.n_max:][mask[:, V.n_max:]]
        hits_n += int((nodes == 2).sum())
        hits_e += int((edges == 5).sum())
        n_n += nodes.numel()
        n_e += edges.numel()
    assert m["denoise/acc_node@t=0.3"] == pytest.approx(hits_n / n_n)
    assert m["denoise/acc_edge@t=0.3"] == pytest.approx(hits_e / n_e)
    # CE of a fixed logit vector: log-sum-exp minus the target's logit.
    lse_n = math.log(math.exp(5.0) + 14)
    lse_e = math.log(math.exp(5.0) + 12)
    assert m["denoise/ce_node@t=0.3"] == pytest.approx(
        (hits_n * (lse_n - 5.0) + (n_n - hits_n) * lse_n) / n_n)
    assert m["denoise/ce_edge@t=0.3"] == pytest.approx(
        (hits_e * (lse_e - 5.0) + (n_e - hits_e) * lse_e) / n_e)


def test_seed_changes_masks_and_per_position_alpha_is_accepted(val):
    model = ConstantModel()
    uniform = lambda t, pad: torch.full(pad.shape, 0.5)  # noqa: E731 - [B, S] rates
    a = denoising_metrics(model, uniform, val, t_grid=(0.5,), batch_size=8, max_batches=2)
    b = denoising_metrics(model, uniform, val, t_grid=(0.5,), batch_size=8, max_batches=2,
                          seed=1)
    assert a != b
    assert a == denoising_metrics(model, uniform, val, t_grid=(0.5,), batch_size=8,
                                  max_batches=2)
