"""Learned rates (v2) joint training (spec §4.4): one optimiser over both networks,
validation, resumption."""

from __future__ import annotations

import math

import pytest
import torch
from _model_support import V2_VOCAB as VOCAB
from _model_support import v2_batch

from bdgen.diffusion.objective import (
    LearnedRatesObjective,
    LearnedRatesSettings,
    noise_config,
    objective_for,
)
from bdgen.diffusion.rate_network import RateNetwork
from bdgen.diffusion.trainer import TrainConfig, Trainer
from bdgen.errors import BdgenError
from bdgen.model.denoiser import MODEL_PRESETS
from bdgen.model.fast_forward import FastDenoiser


def _trainer(steps: int, seed: int = 0, **cfg) -> Trainer:
    torch.manual_seed(seed)
    model = FastDenoiser(MODEL_PRESETS["tiny"], VOCAB)
    rate = RateNetwork(vocab=VOCAB)
    x, pad = v2_batch()
    config = TrainConfig(steps=steps, batch_size=8, lr=3e-3, warmup_steps=2, is_mode="off",
                         seed=seed, checkpoint_every=1000, val_every=1000, log_every=5, **cfg)
    objective = LearnedRatesObjective(rate, torch.ones(13), LearnedRatesSettings(lambda_edge=1.0))
    return Trainer(model, objective, x, pad, config, val_tokens=x, val_pad_mask=pad)


def _tau(tr: Trainer) -> float:
    return tr.objective.log_fields(tr.step, tr.config.steps)["gumbel_temp"]


def test_one_optimiser_over_both_networks_and_rate_network_learns() -> None:
    tr = _trainer(steps=12)
    params = {id(p) for g in tr.optimizer.param_groups for p in g["params"]}
    assert {id(p) for p in tr.objective.rate_network.parameters()} <= params
    assert {id(p) for p in tr.model.parameters()} <= params
    before = {k: v.clone() for k, v in tr.objective.rate_network.state_dict().items()}
    assert _tau(tr) == 1.0
    result = tr.run(progress=False)
    assert result.step == 12 and math.isfinite(result.final_loss)
    assert _tau(tr) == pytest.approx(0.1)
    changed = [k for k, v in tr.objective.rate_network.state_dict().items()
               if not torch.equal(v, before[k])]
    assert changed, "the rate network did not receive any update"
    val = tr.validate()
    assert math.isfinite(val.loss) and 0.0 <= val.node_accuracy <= 1.0
    assert result.val and result.val[-1].step == 12


def test_resume_gives_the_same_parameters() -> None:
    straight = _trainer(steps=8)
    straight.run(progress=False)

    first = _trainer(steps=8)  # same total: the Gumbel temperature depends on step/total
    for _ in range(4):
        first.train_step()
    state = first.state_dict()
    assert "rate_network" in state
    resumed = _trainer(steps=8, seed=0)
    resumed.load_state_dict(state)
    resumed.run(progress=False)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_v2_rejects_importance_sampling_and_bad_settings() -> None:
    with pytest.raises(BdgenError, match="is_mode must be 'off'"):
        torch.manual_seed(0)
        x, pad = v2_batch()
        objective_for(noise_config("learned"), VOCAB, torch.ones(13), "legacy")
    with pytest.raises(BdgenError, match="unknown Gumbel temperature schedule"):
        LearnedRatesSettings(tau_schedule="exp")
    settings = LearnedRatesSettings(lambda_edge=0.5)
    assert LearnedRatesSettings.from_dict(settings.to_dict()).lambda_edge == 0.5
