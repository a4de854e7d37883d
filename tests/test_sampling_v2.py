"""v2 sampling: per-position p_unmask / σ_max from the rate network (spec §4.5, §5.3-5.6)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bdgen.data.vocab import EDGE_MASK, EDGE_PAD, NODE_MASK, NODE_PAD, VocabConfig
from bdgen.diffusion.fast_sampling import sample, sample_batch
from bdgen.diffusion.method import Method
from bdgen.diffusion.process import (
    ForwardProcess,
    RateNetworkProcess,
    ScheduleProcess,
    forward_process_of,
)
from bdgen.diffusion.rate_network import RateNetwork, RateNetworkConfig, build_rate_network
from bdgen.diffusion.remasking import make_strategy
from bdgen.errors import BdgenError
from bdgen.model.checkpoint import Checkpoint, build_denoiser, load_checkpoint, save_checkpoint
from bdgen.model.denoiser import MODEL_PRESETS
from bdgen.model.fast_forward import FastDenoiser

VOCAB = VocabConfig(8)
N = VOCAB.n_max


def _nets(seed: int = 0) -> tuple[FastDenoiser, RateNetwork]:
    torch.manual_seed(seed)
    model = FastDenoiser(MODEL_PRESETS["tiny"], VOCAB)
    for head in (model.node_head, model.edge_head):  # non-trivial, non-uniform predictions
        nn.init.normal_(head.weight, std=0.3)
    rate = RateNetwork(vocab=VOCAB)
    # spread the per-position schedules so that p_unmask really differs between positions
    with torch.no_grad():
        rate.coef_mlp[2].bias.copy_(torch.tensor([2.0, -1.0, 0.5, -2.0]))
        rate.coef_mlp[2].weight.mul_(5.0)
    return model.eval(), rate.eval()


def _pad(rooms: list[int]) -> torch.Tensor:
    return torch.as_tensor(VOCAB.pad_mask_table[rooms])


def test_process_shapes_dtypes_and_pad_zero() -> None:
    _, rate = _nets()
    proc = RateNetworkProcess(rate)
    assert isinstance(proc, ForwardProcess)
    pad = _pad([3, 6, 8])
    t_now = torch.full((3,), 0.5, dtype=torch.float32)
    t_next = torch.full((3,), 0.49, dtype=torch.float64)
    p = proc.p_unmask(t_now, t_next, pad)
    s = proc.sigma_max(t_now.double(), t_next, pad)
    for x in (p, s):
        assert x.shape == pad.shape and x.dtype == torch.float32
        assert (x[~pad] == 0).all() and (x >= 0).all() and (x <= 1).all()
    assert p[pad].unique().numel() > 1  # per position
    # float64 difference of float32 network outputs (spec §3.6)
    a_now = rate(t_now, pad).double()
    a_next = rate(t_next.float(), pad).double()
    expect = ((a_next - a_now) / (1 - a_now + 1e-8)).clamp(0, 1).float()
    assert torch.equal(p, expect)
    # last step: α_l(0) = σ(13) < 1, so p_unmask = 1 − (1 − α(0))/(1 − α(t_now)) (spec §5.3);
    # a leftover MASK is then filled by the sampler's clean-up call
    p_last = proc.p_unmask(torch.full((3,), 0.5), torch.zeros(3, dtype=torch.float64), pad)
    assert (p_last[pad] > 0.98).all() and (p_last[pad] < 1).all()


@pytest.mark.parametrize("name", [
    "random_argmax_no_remask",
    "llada_topp0.9_no_remask",
    "llada_topp0.9_remdm_confidence_tsw1.0",
    "random_topp0.9_remdm_cap_eta0.4",
    "llada_topp0.9_remdm_rescale_eta0.5",
])
def test_v2_sampling_leaves_no_mask_and_keeps_pad(name: str) -> None:
    model, rate = _nets(1)
    rooms = torch.tensor([1, 2, 3, 4, 5, 6, 7, 8] * 2)
    out = sample(model, RateNetworkProcess(rate), VOCAB, rooms, Method.parse(name), steps=20,
                 seed=3)
    pad = out.pad_mask
    assert not (out.tokens[:, :N] == NODE_MASK).any()
    assert not (out.tokens[:, N:] == EDGE_MASK).any()
    assert (out.tokens[:, :N][~pad[:, :N]] == NODE_PAD).all()
    assert (out.tokens[:, N:][~pad[:, N:]] == EDGE_PAD).all()
    assert not (out.tokens[:, :N][pad[:, :N]] == NODE_PAD).any()
    assert not (out.tokens[:, N:][pad[:, N:]] == EDGE_PAD).any()


@pytest.mark.parametrize("strategy,eta", [("cap", 1.0), ("rescale", 1.0), ("confidence", None)])
def test_per_position_remasking_never_touches_pad(strategy: str, eta: float | None) -> None:
    _, rate = _nets()
    proc = RateNetworkProcess(rate)
    pad = _pad([2, 4, 7])
    candidates = torch.ones_like(pad)  # even if a caller forgot to filter PAD out
    for t in (0.9, 0.5, 0.1):
        sigma_max = proc.sigma_max(torch.full((3,), t, dtype=torch.float64),
                                   torch.full((3,), t - 0.05, dtype=torch.float64), pad)
        assert (sigma_max[~pad] == 0).all() and (sigma_max[pad] > 0).all()
        probs = make_strategy(strategy, eta).probabilities(
            sigma_max, candidates, torch.rand(pad.shape))
        assert (probs.expand_as(pad)[~pad] == 0).all()


class _Recorder(nn.Module):
    """The real denoiser, recording the token input of every call."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.inputs = inner, []

    def forward(self, x, pad_mask, t, *args, **kwargs):
        self.inputs.append(x.clone())
        return self.inner(x, pad_mask, t, *args, **kwargs)


class _RecordingProcess(RateNetworkProcess):
    def __init__(self, rate: RateNetwork) -> None:
        super().__init__(rate)
        self.p = []

    def p_unmask(self, t_now, t_next, pad_mask):
        p = super().p_unmask(t_now, t_next, pad_mask)
        self.p.append(p)
        return p


def test_llada_budget_is_round_of_sum_of_masked_p_unmask() -> None:
    model, rate = _nets(2)
    rec, proc = _Recorder(model), _RecordingProcess(rate)
    rooms = torch.tensor([8, 7, 6, 5])
    trace: list = []
    sample_batch(rec, proc, VOCAB, rooms, Method.parse("llada_topp0.9_no_remask"), 12,
                 torch.Generator().manual_seed(0), early_stop=False, compact=False, trace=trace)
    mask_tok = torch.tensor([NODE_MASK] * N + [EDGE_MASK] * VOCAB.n_edges)
    checked = 0
    for x, p, step in zip(rec.inputs, proc.p, trace):
        is_mask = x == mask_tok
        n_masked = is_mask.sum(-1)
        if step["i"] == 0:
            expect = n_masked
        else:
            k = torch.round((p * is_mask).sum(-1)).long().clamp_min(1)
            expect = torch.minimum(k, n_masked)
        assert torch.equal(step["revealed"], expect)
        checked += int((expect > 1).sum())
    assert checked > 0  # the budget exceeded one token somewhere (not just the clamp)


def _checkpoint(version: str, model: FastDenoiser, rate: RateNetwork | None) -> Checkpoint:
    return Checkpoint(
        version=version, model_config=model.config.to_dict(), n_max=N,
        noise={"type": "learned", **rate.config.to_dict()} if rate else {"type": "loglinear",
                                                                           "eps": 1e-3},
        train_config={}, dataset_hash="0" * 64, dataset_id="synthetic-000000000000",
        split={"seed": 42, "fractions": [0.8, 0.1, 0.1]},
        num_rooms_distribution=[0.0, 0.0, 0.2, 0.3, 0.5, 0.0, 0.0, 0.0],
        edge_class_weights=[1.0] * 13, step=1,
        model_state=model.state_dict(),
        rate_network_state=rate.state_dict() if rate else None,
        rate_network_config=rate.config.to_dict() if rate else None)


def test_checkpoint_round_trip_picks_the_process(tmp_path) -> None:
    model, _ = _nets(4)
    torch.manual_seed(4)
    rate = RateNetwork(RateNetworkConfig(d_emb=16, K=3, hidden_dim=8), VOCAB)
    save_checkpoint(_checkpoint("v2", model, rate), tmp_path / "v2.pt")
    ckpt = load_checkpoint(tmp_path / "v2.pt")
    rebuilt = build_rate_network(ckpt)
    assert rebuilt.config == rate.config and not rebuilt.training
    t = torch.rand(5)
    assert torch.equal(rebuilt(t), rate(t))
    proc = forward_process_of(ckpt)
    assert isinstance(proc, RateNetworkProcess)
    out = sample(build_denoiser(ckpt), proc, VOCAB, torch.tensor([3, 4]),
                 Method.parse("v2_llada_topp0.9_no_remask"), steps=5, seed=0)
    assert not (out.tokens == NODE_MASK).any()

    save_checkpoint(_checkpoint("v1", model, None), tmp_path / "v1.pt")
    v1 = load_checkpoint(tmp_path / "v1.pt")
    assert isinstance(forward_process_of(v1), ScheduleProcess)
    with pytest.raises(BdgenError, match="not a v2"):
        build_rate_network(v1)
