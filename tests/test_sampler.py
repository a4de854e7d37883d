"""Sampler invariants (spec §5, §11 item 6) on a tiny, randomly perturbed FastDenoiser."""

from __future__ import annotations

import pytest
import torch
from _model_support import PerPositionProcess, perturb
from torch import nn

from bdgen.data.vocab import EDGE_MASK, EDGE_PAD, NODE_MASK, NODE_PAD, RPLAN_VOCAB
from bdgen.diffusion.fast_sampling import sample, sample_batch
from bdgen.diffusion.method import Method
from bdgen.diffusion.process import ScheduleProcess
from bdgen.diffusion.remasking import Cap, Confidence, make_strategy
from bdgen.diffusion.reverse import _cumsum_last, draw_candidates, remask_steps
from bdgen.diffusion.sampler import draw_num_rooms
from bdgen.diffusion.schedules import make_schedule
from bdgen.errors import BdgenError
from bdgen.model.denoiser import MODEL_PRESETS
from bdgen.model.fast_forward import FastDenoiser

VOCAB = RPLAN_VOCAB
N_MAX = VOCAB.n_max
ROOMS_DIST = [0.0, 0.0, 0.0, 0.003, 0.072, 0.311, 0.362, 0.252]
STEPS = 20
MASK_TOK = torch.tensor([NODE_MASK] * N_MAX + [EDGE_MASK] * VOCAB.n_edges)
PAD_TOK = torch.tensor([NODE_PAD] * N_MAX + [EDGE_PAD] * VOCAB.n_edges)


@pytest.fixture(scope="module")
def model() -> FastDenoiser:
    m = FastDenoiser(MODEL_PRESETS["tiny"], VOCAB).eval()
    perturb(m.parameters(), 0.3)
    return m


@pytest.fixture(scope="module")
def process() -> ScheduleProcess:
    return ScheduleProcess(make_schedule("loglinear"))


class ConstantDenoiser(nn.Module):
    """Fixed per-position logits whatever the input (context-free predictions)."""

    def __init__(self, seed: int = 3) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.node = nn.Parameter(torch.randn(N_MAX, 15, generator=g))
        self.edge = nn.Parameter(torch.randn(VOCAB.n_edges, 13, generator=g))

    def forward(self, tokens, pad_mask, t):
        b = tokens.shape[0]
        node = self.node.clone()
        node[:, [NODE_MASK, NODE_PAD]] = -torch.inf
        edge = self.edge.clone()
        edge[:, [EDGE_MASK, EDGE_PAD]] = -torch.inf
        return node.expand(b, -1, -1), edge.expand(b, -1, -1)


def rooms(n: int = 24, seed: int = 42) -> torch.Tensor:
    return draw_num_rooms(ROOMS_DIST, n, seed)


def run(model, process, name, seed=1, n=24, **kw):
    return sample(model, process, VOCAB, rooms(n), Method.parse(name), STEPS, seed, **kw)


ALL = ["random_argmax_no_remask", "llada_topp0.9_no_remask", "random_temp0.8_no_remask",
       "llada_topp0.9_remdm_confidence_tsw0.5", "random_topp0.9_remdm_cap_eta0.4",
       "llada_topp1.0_remdm_rescale_eta0.5_tsw0.7"]


@pytest.mark.parametrize("name", ALL)
def test_no_mask_left_and_pad_exact(model, process, name):
    out = run(model, process, name)
    real = out.pad_mask
    assert not ((out.tokens == MASK_TOK) & real).any()
    assert torch.equal(out.tokens[~real], PAD_TOK.expand_as(out.tokens)[~real])
    assert (out.tokens[:, :N_MAX][real[:, :N_MAX]] < 13).all()
    assert (out.tokens[:, N_MAX:][real[:, N_MAX:]] < 11).all()
    assert torch.equal(out.pad_mask, torch.from_numpy(VOCAB.pad_mask_table)[out.num_rooms])


@pytest.mark.parametrize("name", ["random_topp0.9_no_remask", "llada_topp0.9_no_remask"])
def test_carry_over_without_remasking(model, process, name):
    trace: list = []
    sample_batch(model, process, VOCAB, rooms(), Method.parse(name), STEPS,
                 torch.Generator().manual_seed(0), early_stop=False, trace=trace)
    for a, b in zip(trace, trace[1:]):
        decoded = a["x"] != MASK_TOK
        assert torch.equal(b["x"][decoded], a["x"][decoded])
        assert (b["x"] != MASK_TOK).sum() >= decoded.sum()


def test_llada_budget_per_step(model, process):
    trace: list = []
    sample_batch(model, process, VOCAB, rooms(), Method.parse("llada_topp0.9_no_remask"),
                 STEPS, torch.Generator().manual_seed(0), early_stop=False, trace=trace)
    assert len(trace) == STEPS
    for step in trace:
        n = step["n_masked_before"]
        p = step["p_unmask"][:, 0]
        if step["i"] == 0:
            want = n
        else:
            want = torch.minimum(torch.round(p * n.float()).long().clamp_min(1), n)
        assert torch.equal(step["revealed"], want), step["i"]


def test_llada_budget_float32_path(process):
    # spec §5.4 examples (N = 100): the float32 product decides the rounding direction.
    for i, n_masked, k in [(49, 25, 1), (71, 36, 1), (69, 35, 1), (23, 36, 1), (19, 30, 2)]:
        t_now = torch.tensor([(i + 1) / 100], dtype=torch.float32)
        t_next = torch.tensor([i / 100], dtype=torch.float64)
        p = process.p_unmask(t_now, t_next, torch.ones(1, 36, dtype=torch.bool))
        assert p.dtype == torch.float32 and p.shape == (1, 1)
        assert max(1, int(torch.round(p[0, 0] * n_masked))) == k, (i, n_masked)


def test_remasking_schedule(model, process):
    m = Method.parse("random_topp0.9_remdm_cap_eta1.0_tsw0.5")
    assert remask_steps(m, Cap(1.0), 100) == list(range(48, 0, -1))
    assert remask_steps(Method.parse("random_topp0.9_remdm_cap_eta1.0"), Cap(1.0), 100) == \
        list(range(98, 0, -1))  # t_now = 1.0 is not < 1.0; never i = 0
    trace: list = []
    sample_batch(model, process, VOCAB, rooms(), m, STEPS, torch.Generator().manual_seed(0),
                 trace=trace)
    fired = [s["i"] for s in trace if s["remask_fired"]]
    assert fired and 0 not in fired
    for s in trace:
        if s["i"] == 0 or s["t_now"] >= 0.5:
            assert not s["remask_fired"] and s["remasked"].sum() == 0
    assert sum(int(s["remasked"].sum()) for s in trace) > 0


def test_confidence_average_is_sigma_max():
    g = torch.Generator().manual_seed(0)
    cand = torch.rand(6, 36, generator=g) < 0.6
    cand[5] = False
    probs = torch.rand(6, 36, generator=g)
    sigma_max = torch.full((6, 1), 0.05)
    sig = Confidence().probabilities(sigma_max, cand, probs)
    for b in range(5):
        assert torch.allclose(sig[b][cand[b]].mean(), torch.tensor(0.05), atol=1e-6)
        ratio = sig[b][cand[b]] / 0.05
        assert (ratio <= torch.e + 1e-5).all() and (ratio >= 1 / torch.e - 1e-5).all()
    assert torch.isnan(sig[5]).all()  # zero candidates: NaN, so U < sigma never fires
    assert not (torch.rand(36) < sig[5]).any()
    # per-position (v2) sigma_max broadcasts the same way
    sig2 = Confidence().probabilities(torch.full((6, 36), 0.05), cand, probs)
    assert torch.allclose(sig, sig2, equal_nan=True)


def test_cap_eta_zero_changes_nothing(model, process):
    a = run(model, process, "random_topp0.9_no_remask")
    b = run(model, process, "random_topp0.9_remdm_cap_eta0.0")
    c = run(model, process, "random_topp0.9_remdm_rescale_eta0.0")
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.tokens, c.tokens)


def test_argmax_remasking_with_context_free_model_changes_nothing(process):
    m = ConstantDenoiser()
    base = run(m, process, "random_argmax_no_remask")
    for name in ("random_argmax_remdm_cap_eta1.0", "llada_argmax_remdm_confidence_tsw1.0",
                 "llada_argmax_no_remask"):
        assert torch.equal(run(m, process, name).tokens, base.tokens), name


@pytest.mark.parametrize("name", ["llada_topp0.9_no_remask", "random_topp0.9_no_remask",
                                  "llada_argmax_no_remask", "random_topp0.9_remdm_cap_eta0.0",
                                  "llada_topp0.9_remdm_confidence_tsw0.5"])
def test_early_stop_compaction_and_micro_batches_are_bit_identical(model, process, name):
    full = run(model, process, name, early_stop=False, compact=False, batch_size=10,
               model_batch=10)
    for es, cp, mb in ((True, True, None), (True, False, 3), (False, True, 4)):
        fast = run(model, process, name, early_stop=es, compact=cp, batch_size=10,
                   model_batch=mb)
        assert torch.equal(fast.tokens, full.tokens), (es, cp, mb)
        assert fast.rows_evaluated <= full.rows_evaluated


def test_llada_without_remasking_reveals_one_token_per_step():
    steps, proc = 100, ScheduleProcess(make_schedule("loglinear"))
    m = ConstantDenoiser()
    r = torch.tensor([8, 5])
    trace: list = []
    _, calls, _ = sample_batch(m, proc, VOCAB, r, Method.parse("llada_argmax_no_remask"),
                               steps, torch.Generator().manual_seed(0), compact=False,
                               trace=trace)
    assert calls == 36 and len(trace) == 36
    assert all(s["revealed"][0] == 1 for s in trace)


def test_determinism_and_seed_dependence(model, process):
    a = run(model, process, "random_topp0.9_remdm_cap_eta0.4", seed=5)
    b = run(model, process, "random_topp0.9_remdm_cap_eta0.4", seed=5)
    c = run(model, process, "random_topp0.9_remdm_cap_eta0.4", seed=6)
    assert torch.equal(a.tokens, b.tokens) and not torch.equal(a.tokens, c.tokens)


def test_room_counts_follow_distribution_and_are_method_independent():
    a, b = draw_num_rooms(ROOMS_DIST, 5000, 42), draw_num_rooms(ROOMS_DIST, 5000, 42)
    assert torch.equal(a, b) and not torch.equal(a, draw_num_rooms(ROOMS_DIST, 5000, 43))
    freq = torch.bincount(a - 1, minlength=N_MAX).float() / 5000
    assert (freq - torch.tensor(ROOMS_DIST)).abs().max() < 0.03
    assert a.min() >= 4
    with pytest.raises(BdgenError):
        draw_num_rooms([0.0, -1.0], 3, 0)


def test_per_position_process_matches_broadcast_in_random_mode(model, process):
    v2 = PerPositionProcess(process)
    for name in ("random_topp0.9_no_remask", "random_topp0.9_remdm_cap_eta0.4"):
        assert torch.equal(run(model, v2, name).tokens, run(model, process, name).tokens)
    out = run(model, v2, "llada_topp0.9_remdm_confidence_tsw1.0")
    assert not ((out.tokens == MASK_TOK) & out.pad_mask).any()


def test_top_p_keeps_the_nucleus():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05] + [0.0] * 11)
    logits = torch.log(probs).expand(4000, 1, 15).contiguous()
    g = torch.Generator().manual_seed(0)
    cand = draw_candidates(logits, Method(top_p=0.7), g, torch.softmax(logits, -1))
    counts = torch.bincount(cand.flatten(), minlength=15)
    assert counts[2:].sum() == 0
    assert abs(counts[0] / 4000 - 0.625) < 0.03
    # the top token is always kept
    cand = draw_candidates(logits, Method(top_p=0.01), g, torch.softmax(logits, -1))
    assert (cand == 0).all()
    # top_p = 1.0: untruncated sampling (never MASK/PAD)
    cand = draw_candidates(logits, Method(top_p=1.0), g, torch.softmax(logits, -1))
    assert set(cand.unique().tolist()) == {0, 1, 2, 3}


def test_top_p_cumsum_is_the_sequential_one():
    """The nucleus cumsum runs as an outer-dim scan (fast on CUDA); on CPU it must give
    exactly ``cumsum(-1)``, so CPU samples did not change."""
    g = torch.Generator().manual_seed(3)
    probs = torch.softmax(torch.randn(64, 36, 15, generator=g) * 3, -1).sort(-1, True)[0]
    assert torch.equal(_cumsum_last(probs), probs.cumsum(-1))


def test_unknown_strategy_lists_valid():
    with pytest.raises(BdgenError, match="cap, rescale, confidence"):
        make_strategy("foo")
    with pytest.raises(BdgenError):
        make_strategy("cap", -0.1)


def test_bad_arguments(model, process):
    with pytest.raises(BdgenError, match="cuda_graphs needs a CUDA device"):
        run(model, process, "llada_topp0.9_no_remask", cuda_graphs=True)
    with pytest.raises(BdgenError):
        sample(model, process, VOCAB, rooms(), Method(), 0, 1)
    with pytest.raises(BdgenError):
        sample(model, process, VOCAB, torch.tensor([9]), Method(), 5, 1)


@pytest.mark.parametrize("name", ["llada_topp0.9_remdm_confidence_tsw0.5",
                                  "random_topp0.9_remdm_cap_eta0.4", "llada_topp0.9_no_remask"])
def test_concurrent_chunks_are_bit_identical(model, process, name):
    """CPU chunks sampled on a thread pool give the sequential run's tokens and counts, in
    chunk order, and torch's thread count is restored afterwards."""
    before = torch.get_num_threads()
    seen: list[int] = []
    one = run(model, process, name, n=40, batch_size=8, workers=1)
    many = run(model, process, name, n=40, batch_size=8, workers=3, progress=seen.append)
    assert torch.equal(one.tokens, many.tokens)
    assert (one.model_calls, one.rows_evaluated) == (many.model_calls, many.rows_evaluated)
    assert seen == [8, 16, 24, 32, 40]
    assert torch.get_num_threads() == before
