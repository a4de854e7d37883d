"""The fast sampler gives the reference loop's tokens on CPU, and the step's pieces
(:mod:`bdgen.diffusion.reverse`) compose into the reference step."""

from __future__ import annotations

import pytest
import torch
from _model_support import perturb

from bdgen.data.vocab import VocabConfig
from bdgen.diffusion import fast_sampling, reverse, sampler
from bdgen.diffusion.method import Method
from bdgen.diffusion.process import RateNetworkProcess, ScheduleProcess
from bdgen.diffusion.rate_network import RateNetwork
from bdgen.diffusion.schedules import make_schedule
from bdgen.model.denoiser import MODEL_PRESETS, BDDenoiser
from bdgen.model.fast_forward import FastDenoiser

VOCAB = VocabConfig(8)
ROOMS = [0.0, 0.0, 0.0, 0.003, 0.072, 0.311, 0.362, 0.252]
METHODS = ["random_argmax_no_remask", "random_temp0.8_no_remask", "llada_topp0.9_no_remask",
           "llada_topp0.9_remdm_confidence_tsw0.5", "random_topp0.9_remdm_cap_eta0.4",
           "llada_topp1.0_remdm_rescale_eta0.5_tsw0.7", "v2_llada_topp0.9_no_remask",
           "v2_random_topp0.9_remdm_cap_eta0.2", "v2_llada_topp0.9_remdm_confidence_tsw1.0"]


@pytest.fixture(scope="module", params=[BDDenoiser, FastDenoiser])
def nets(request) -> tuple[BDDenoiser, ScheduleProcess, RateNetworkProcess]:
    """The reference and the production model (same weights), and both processes."""
    torch.manual_seed(0)
    model, rate = request.param(MODEL_PRESETS["tiny"], VOCAB), RateNetwork(vocab=VOCAB)
    perturb([*model.parameters(), *rate.parameters()], 0.3)
    return (model.eval(), ScheduleProcess(make_schedule("loglinear")),
            RateNetworkProcess(rate.eval()))


@pytest.mark.parametrize("name", METHODS)
def test_fast_sampler_equals_reference_loop(nets, name: str) -> None:
    model, v1, v2 = nets
    proc = v2 if name.startswith("v2_") else v1
    rooms = sampler.draw_num_rooms(ROOMS, 40, 3)
    method = Method.parse(name)
    ref = sampler.sample(model, proc, VOCAB, rooms, method, 16, 9, batch_size=16)
    for kw in ({}, {"workers": 2, "model_batch": 5},
               {"early_stop": False, "compact": False, "workers": 1}):
        fast = fast_sampling.sample(model, proc, VOCAB, rooms, method, 16, 9,
                                    batch_size=16, **kw)
        assert torch.equal(fast.tokens, ref.tokens), kw
        assert fast.rows_evaluated <= ref.rows_evaluated


def test_reference_trace_equals_fast_trace_without_speed_ups(nets) -> None:
    model, v1, _ = nets
    rooms = sampler.draw_num_rooms(ROOMS, 12, 1)
    method = Method.parse("random_topp0.9_remdm_cap_eta0.4")
    traces: list[list] = [[], []]
    sampler.sample_batch(model, v1, VOCAB, rooms, method, 10, torch.Generator().manual_seed(4),
                         trace=traces[0])
    fast_sampling.sample_batch(model, v1, VOCAB, rooms, method, 10,
                               torch.Generator().manual_seed(4), early_stop=False,
                               compact=False, trace=traces[1])
    assert len(traces[0]) == len(traces[1]) == 10
    for a, b in zip(*traces):
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k]
                   for k in a)


def test_draw_candidates_k_copies_from_one_call() -> None:
    """K candidates per position from one model call: expand the logits; with one copy the
    draws are those of the plain call (same generator state, same shapes)."""
    logits = torch.randn(3, 36, 15, generator=torch.Generator().manual_seed(0))
    method = Method.parse("llada_topp0.9_no_remask")
    one = reverse.draw_candidates(logits, method, torch.Generator().manual_seed(1))
    k1 = reverse.draw_candidates(logits.expand(1, 3, 36, 15), method,
                                 torch.Generator().manual_seed(1))
    assert torch.equal(one, k1[0])
    k8 = reverse.draw_candidates(logits.expand(8, 3, 36, 15), method,
                                 torch.Generator().manual_seed(1))
    assert k8.shape == (8, 3, 36) and not all(torch.equal(k8[0], k) for k in k8[1:])


def test_propose_on_a_tiled_batch_keeps_pad_and_budget(nets) -> None:
    """The unmask transition on K copies of a batch (block tiling, row k*B + b): PAD stays
    PAD, and LLaDA reveals the same number of positions in every copy of a sample."""
    _, v1, _ = nets
    rooms = torch.tensor([3, 8, 5])
    method = Method.parse("llada_topp0.9_no_remask")
    plan = reverse.Plan.build(method, v1, VOCAB, rooms, 10)
    k = 4
    x = plan.initial().repeat(k, 1)
    pad = plan.pad_mask.repeat(k, 1)
    logits = torch.randn(3, 36, 15, generator=torch.Generator().manual_seed(2)).repeat(k, 1, 1)
    prop = reverse.propose(plan, x, logits, 7, torch.Generator().manual_seed(0), pad_mask=pad)
    assert torch.equal(prop.x[~pad], plan.pad_tok.expand_as(x)[~pad])
    counts = prop.reveal.sum(-1).view(k, 3)
    assert (counts == counts[0]).all() and (counts > 0).all()


def test_remask_protect_excludes_positions(nets) -> None:
    _, v1, _ = nets
    method = Method.parse("random_topp0.9_remdm_cap_eta1.0")
    rooms = torch.tensor([8, 8])
    plan = reverse.Plan.build(method, v1, VOCAB, rooms, 10)
    x = torch.where(plan.pad_mask, torch.zeros_like(plan.initial()), plan.pad_tok)
    protect = torch.zeros_like(plan.pad_mask)
    protect[:, :4] = True
    for _ in range(5):
        out, remasked = reverse.remask(plan, x, None, 8, torch.Generator().manual_seed(0),
                                       protect=protect)
        assert not remasked[protect].any() and remasked.any()
        assert torch.equal(out[remasked], plan.mask_tok.expand_as(x)[remasked])
