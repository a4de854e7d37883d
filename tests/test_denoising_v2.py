"""Denoising metrics of v2 models: learned per-position rates, legacy dummy schedule on request."""

from __future__ import annotations

import math

import torch
from click.testing import CliRunner

from bdgen.cli.main import cli
from bdgen.data.dataset import prepare_synthetic
from bdgen.diffusion.process import RateNetworkProcess, ScheduleProcess
from bdgen.diffusion.rate_network import RateNetwork, build_rate_network
from bdgen.diffusion.schedules import make_schedule
from bdgen.eval.denoising import denoising_metrics
from bdgen.model.checkpoint import Checkpoint, build_denoiser, save_checkpoint
from bdgen.model.denoiser import MODEL_PRESETS
from bdgen.model.fast_forward import FastDenoiser
from bdgen.pipeline.evaluate import V2_DUMMY_DENOISING_NOISE, compute_denoising

GRID = (0.5, 0.9)


def _v2_checkpoint(path, ds) -> Checkpoint:
    torch.manual_seed(0)
    model = FastDenoiser(MODEL_PRESETS["tiny"], ds.vocab)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape) * 0.2)
    rate = RateNetwork(vocab=ds.vocab)
    with torch.no_grad():  # mask a good share of positions already at mid-time
        rate.coef_mlp[2].bias.copy_(torch.tensor([3.0, -2.0, -2.0, -2.0]))
    stats = ds.train_stats()
    ckpt = Checkpoint(
        version="v2", model_config=model.config.to_dict(), n_max=ds.vocab.n_max,
        noise={"type": "learned", **rate.config.to_dict()}, train_config={},
        dataset_hash=ds.dataset_hash, dataset_id=ds.dataset_id,
        split={"seed": 42, "fractions": [0.8, 0.1, 0.1]},
        num_rooms_distribution=stats.num_rooms_distribution,
        edge_class_weights=stats.edge_class_weights, step=1, model_state=model.state_dict(),
        rate_network_state=rate.state_dict(), rate_network_config=rate.config.to_dict())
    save_checkpoint(ckpt, path)
    return ckpt


def test_v2_denoising_uses_learned_rates_and_legacy_flag_the_dummy_schedule(tmp_path) -> None:
    ds = prepare_synthetic(200, seed=3)
    ckpt = _v2_checkpoint(tmp_path / "v2.pt", ds)
    val = ds.split("val")
    model = build_denoiser(ckpt)
    learned_fn = RateNetworkProcess(build_rate_network(ckpt)).alpha
    alpha = learned_fn(torch.full((len(val),), 0.5), val.pad_mask)
    assert alpha.shape == val.pad_mask.shape and (alpha[~val.pad_mask] == 1).all()

    expected = denoising_metrics(model, learned_fn, val)
    legacy_expected = denoising_metrics(
        model, ScheduleProcess(make_schedule(V2_DUMMY_DENOISING_NOISE)).alpha, val)
    learned = compute_denoising(tmp_path / "v2.pt", ds)
    legacy = compute_denoising(tmp_path / "v2.pt", ds, v2_dummy_schedule=True)

    def same(a: dict, b: dict) -> bool:
        return a.keys() == b.keys() and all(
            (math.isnan(a[k]) and math.isnan(b[k])) or a[k] == b[k] for k in a)

    assert len(learned) == 20
    assert same(learned, expected)
    assert same(legacy, legacy_expected)
    assert not same(learned, legacy)


def test_evaluate_cli_has_the_legacy_flag() -> None:
    out = CliRunner().invoke(cli, ["evaluate", "--help"]).output
    assert "--legacy-v2-denoising" in out
