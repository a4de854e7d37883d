"""Guided (SVDD) sampler invariants (GUIDANCE_SPEC G4, G5, G8) on a tiny perturbed denoiser."""

from __future__ import annotations

import math

import pytest
import torch
from _model_support import PerPositionProcess, perturb

from bdgen.data.graph import detokenize
from bdgen.data.vocab import NODE_MASK, RPLAN_VOCAB
from bdgen.diffusion.guided import DIAGNOSTICS, sample_guided, sample_guided_batch
from bdgen.diffusion.guided_step import LockState, attribution_boost, update_lock
from bdgen.diffusion.method import Method
from bdgen.diffusion.process import ScheduleProcess
from bdgen.diffusion.sampler import draw_num_rooms, sample
from bdgen.diffusion.schedules import make_schedule
from bdgen.errors import BdgenError
from bdgen.guidance.constraints import ConstraintSet
from bdgen.guidance.names import Guidance
from bdgen.guidance.reward import energy_of
from bdgen.guidance.schema import compile_specs
from bdgen.guidance.violations import soft_violations
from bdgen.model.denoiser import MODEL_PRESETS
from bdgen.model.fast_forward import FastDenoiser

VOCAB = RPLAN_VOCAB
STEPS = 20
ROOMS_DIST = [0.0, 0.0, 0.0, 0.003, 0.072, 0.311, 0.362, 0.252]
# The perturbed tiny model mostly writes DiningRoom and Wall-in, so the set is about those.
CS = compile_specs([
    {"type": "ExactCount", "name": "two_dining", "room_type": "DiningRoom", "target": 2},
    {"type": "CountRange", "name": "few_wallin", "room_type": "Wall-in", "lo": 1, "hi": 2},
    {"type": "RequireAdj", "name": "dining_wallin", "type_a": "DiningRoom",
     "type_b": "Wall-in"},
    {"type": "ForbidAdj", "name": "no_dining_dining", "type_a": "DiningRoom",
     "type_b": "DiningRoom"},
])


@pytest.fixture(scope="module")
def model() -> FastDenoiser:
    torch.manual_seed(0)  # the initialisation draws from the global generator
    m = FastDenoiser(MODEL_PRESETS["tiny"], VOCAB).eval()  # what checkpoints build
    perturb(m.parameters(), 0.3)
    return m


@pytest.fixture(scope="module")
def process() -> ScheduleProcess:
    return ScheduleProcess(make_schedule("loglinear"))


def rooms(n: int = 24, seed: int = 42) -> torch.Tensor:
    return draw_num_rooms(ROOMS_DIST, n, seed)


def guided(model, process, name, seed=1, n=24, cs=CS, **kw):
    return sample_guided(model, process, VOCAB, rooms(n), Method.parse(name), cs, STEPS, seed,
                         **kw)


def mean_energy(tokens, pad_mask, cs=CS) -> float:
    es = [energy_of(cs.hard(detokenize(t.numpy(), p.numpy(), VOCAB)), cs)
          for t, p in zip(tokens, pad_mask)]
    return sum(es) / len(es)


BASES = ["llada_topp0.9_no_remask", "random_topp0.9_no_remask", "random_temp0.8_no_remask",
         "llada_topp0.9_remdm_confidence_tsw1.0", "random_topp0.9_remdm_cap_eta0.4",
         "llada_topp1.0_remdm_rescale_eta0.5_tsw0.7"]


@pytest.mark.parametrize("base", BASES)
def test_k1_gives_the_unguided_samples_bit_for_bit(model, process, base):
    unguided = sample(model, process, VOCAB, rooms(), Method.parse(base), STEPS, 1)
    for suffix in ("_guided_K1_a0.01_soft_linear", "_guided_K1_a5.0_hard_quadratic"):
        out = guided(model, process, base + suffix)
        assert torch.equal(out.tokens, unguided.tokens), suffix
        assert out.diagnostics["ess"] == [1.0] * STEPS


def test_k1_unchanged_with_a_per_position_process(model, process):
    pp = PerPositionProcess(process)
    base = "llada_topp0.9_remdm_confidence_tsw1.0"
    unguided = sample(model, pp, VOCAB, rooms(), Method.parse(base), STEPS, 1)
    assert torch.equal(guided(model, pp, base + "_guided_K1_a0.1_soft_linear").tokens,
                       unguided.tokens)


def test_llada_argmax_candidates_are_identical_so_guidance_is_a_no_op(model, process):
    base = "llada_argmax_no_remask"
    unguided = sample(model, process, VOCAB, rooms(), Method.parse(base), STEPS, 1)
    out = guided(model, process, base + "_guided_K8_a0.01_soft_linear")
    assert torch.equal(out.tokens, unguided.tokens)
    assert out.diagnostics["ess"] == [8.0] * STEPS


GUIDED = ["llada_topp0.9_no_remask_guided_K6_a0.1_soft_linear",
          "random_topp0.9_no_remask_guided_K4_a0.5_hard_log1p",
          "llada_topp0.9_remdm_confidence_tsw1.0_guided_K5_a0.1_soft_linear_protect_boost",
          "llada_topp0.9_remdm_confidence_tsw1.0_guided_K4_a0.1_soft_linear_fresh"
          "_lock_b0.85_c3_d0.5_w0.2",
          "random_topp0.9_remdm_cap_eta0.4_guided_K4_a0.1_soft_quadratic_protect_decay3.0"]


@pytest.mark.parametrize("name", GUIDED)
def test_same_seed_same_samples_and_diagnostics(model, process, name):
    a, b = guided(model, process, name), guided(model, process, name)
    assert torch.equal(a.tokens, b.tokens) and a.diagnostics == b.diagnostics
    assert not torch.equal(guided(model, process, name, seed=2).tokens, a.tokens)
    assert set(a.diagnostics) == set(DIAGNOSTICS) | {f"violation/{c}" for c in CS.names}
    assert all(len(v) == STEPS and all(math.isfinite(x) for x in v)
               for v in a.diagnostics.values())
    real = a.pad_mask
    assert not ((a.tokens[:, :VOCAB.n_max] == NODE_MASK) & real[:, :VOCAB.n_max]).any()


@pytest.mark.parametrize("name", GUIDED)
def test_early_stop_compaction_and_micro_batches_are_bit_identical(model, process, name):
    full = guided(model, process, name, early_stop=False, compact=False, batch_size=10,
                  model_batch=10, workers=1)
    for es, cp, mb, wk in ((True, True, None, 1), (True, False, 3, 2), (False, True, 4, 2)):
        fast = guided(model, process, name, early_stop=es, compact=cp, batch_size=10,
                      model_batch=mb, workers=wk)
        assert torch.equal(fast.tokens, full.tokens), (es, cp, mb)
        assert fast.diagnostics == full.diagnostics, (es, cp, mb)
        assert fast.rows_evaluated <= full.rows_evaluated


def test_ess_is_k_once_a_sample_is_decoded_without_remasking(model, process):
    trace: list = []
    m = Method.parse("llada_topp0.9_no_remask_guided_K8_a0.01_soft_linear")
    sample_guided_batch(model, process, VOCAB, rooms(), m, CS, STEPS,
                        torch.Generator().manual_seed(0), early_stop=False, trace=trace)
    done_rows = 0
    for before, step in zip(trace, trace[1:]):
        done = before["n_masked"] == 0
        done_rows += int(done.sum())
        assert torch.equal(step["ess"][done], torch.full((int(done.sum()),), 8.0,
                                                         dtype=torch.float64))
    assert done_rows > 0
    # while positions are still being revealed the candidates differ and ESS < K somewhere
    assert min(float(s["ess"].min()) for s in trace) < 8.0


def test_final_reward_is_minus_energy_of_the_output(model, process):
    for name in ("llada_topp0.9_no_remask_guided_K4_a0.1_soft_linear",
                 "llada_topp0.9_remdm_confidence_tsw1.0_guided_K4_a0.1_soft_linear"):
        out = guided(model, process, name, n=30)
        final = out.diagnostics["reward_selected"][-1]
        assert final == pytest.approx(-mean_energy(out.tokens, out.pad_mask), abs=1e-9)


def test_guidance_lowers_the_energy_and_more_candidates_lower_it_more(model, process):
    base = "llada_topp0.9_no_remask"
    e0 = mean_energy(*_tp(sample(model, process, VOCAB, rooms(96), Method.parse(base),
                                 STEPS, 1)))
    e4 = mean_energy(*_tp(guided(model, process, base + "_guided_K4_a0.01_soft_linear",
                                 n=96)))
    e16 = mean_energy(*_tp(guided(model, process, base + "_guided_K16_a0.01_soft_linear",
                                  n=96)))
    assert e16 < e4 < e0
    # a huge alpha makes the weights uniform: the energy stays about unguided
    ebig = mean_energy(*_tp(guided(model, process, base + "_guided_K16_a1000.0_soft_linear",
                                   n=96)))
    assert abs(ebig - e0) < abs(e16 - e0) / 2


def _tp(out):
    return out.tokens, out.pad_mask


def test_no_constraints_gives_uniform_weights(model, process):
    out = guided(model, process, "random_topp0.9_no_remask_guided_K4_a0.1_soft_linear",
                 cs=ConstraintSet(()))
    assert out.diagnostics["ess"] == [4.0] * STEPS
    assert out.diagnostics["reward_selected"] == [0.0] * STEPS


def test_vectorised_scoring_equals_one_candidate_at_a_time(model, process):
    g = torch.Generator().manual_seed(5)
    b, k = 6, 5
    pad = torch.from_numpy(VOCAB.pad_mask_table)[rooms(b)]
    x0 = sample(model, process, VOCAB, rooms(b), Method.parse("random_topp0.9_no_remask"),
                STEPS, 1).tokens
    mask_tok = torch.tensor([NODE_MASK] * VOCAB.n_max + [13] * VOCAB.n_edges)
    cand = torch.where((torch.rand((k, b, x0.shape[1]), generator=g) < 0.5) & pad, mask_tok,
                       x0)
    logits = torch.randn((b, x0.shape[1], 15), generator=g)
    logits[:, :, 13:] = -torch.inf
    batched = soft_violations(CS, cand, logits, pad)
    for kk in range(k):
        for bb in range(b):
            one = soft_violations(CS, cand[kk, bb], logits[bb], pad[bb])
            assert torch.allclose(batched[kk, bb], one, rtol=0, atol=1e-12)


def test_ema_lock_worked_examples():
    g = Guidance(ema_lock=True)  # beta 0.85, C 3, deadline 0.5, warm-up 0
    lock = LockState.start(2, torch.device("cpu"))
    seqs = [[-1.0, -0.8, -0.8, -0.8, -0.8], [-0.5, -0.6, -0.6, -0.6, -0.6]]
    for s in range(5):
        update_lock(g, 100, lock, torch.tensor([seqs[0][s], seqs[1][s]], dtype=torch.float64), s)
    assert lock.locked.tolist() == [False, True] and lock.lock_step.tolist() == [-1, 3]
    assert lock.ema[0].item() == pytest.approx(-0.9044, abs=1e-4)
    for s in range(5, 51):
        update_lock(g, 100, lock, torch.tensor([-0.8, -0.6], dtype=torch.float64), s)
    assert lock.lock_step.tolist() == [50, 3]  # the deadline int(0.5 * 100)


def test_attribution_boost_goes_to_agreeing_higher_reward_positions():
    winner = torch.tensor([[1, 2, 3]])
    cand = torch.tensor([[[1, 2, 3]], [[1, 0, 3]], [[0, 2, 3]]])   # [K=3, B=1, S=3]
    r = torch.tensor([[-1.0], [-2.0], [-1.5]], dtype=torch.float64)
    revealed = torch.tensor([[True, True, False]])
    boost = attribution_boost(cand, winner, r, revealed)
    mean, std = -1.5, r[:, 0].std().item()
    scale = (3 / 7) / (std + 1e-8)
    assert boost[0, 0].item() == pytest.approx(scale * (-1.5 - mean))      # 0: a = 0
    assert boost[0, 1].item() == pytest.approx(scale * (-1.25 - mean))
    assert boost[0, 2].item() == 0.0                                        # not revealed
    assert not attribution_boost(cand[:1], winner, r[:1], revealed).any()  # K = 1


def test_mitigations_act(model, process):
    base = "llada_topp0.9_remdm_confidence_tsw1.0_guided_K4_a0.1_soft_linear"
    plain = guided(model, process, base).diagnostics
    prot = guided(model, process, base + "_protect").diagnostics
    assert sum(plain["positions_protected"]) == 0 < sum(prot["positions_protected"])
    boost = guided(model, process, base + "_boost").diagnostics
    assert sum(boost["positions_boosted"]) > 0 and max(boost["mean_attribution_boost"]) > 0
    lock = guided(model, process, base + "_lock_b0.85_c3_d0.5_w0.0").diagnostics
    d = int(0.5 * STEPS)
    assert lock["samples_locked"][d:] == [1.0] * (STEPS - d)
    assert lock["positions_remasked"][d:] == [0.0] * (STEPS - d)
    decay = guided(model, process, base + "_decay3.0").diagnostics
    assert sum(decay["positions_remasked"]) < sum(plain["positions_remasked"])
    assert any(v != 0 for v in plain["reward_remasking_delta"])


def test_refuses_unguided_methods_and_missing_constraints(model, process):
    with pytest.raises(BdgenError, match="not guided"):
        guided(model, process, "llada_topp0.9_no_remask")
    with pytest.raises(BdgenError, match="needs a constraint set"):
        guided(model, process, "llada_topp0.9_no_remask_guided_K2_a0.1_soft_linear", cs=None)


@pytest.mark.parametrize("name", [
    "llada_topp0.9_no_remask_guided_K6_a0.1_soft_linear",
    "random_topp0.9_remdm_cap_eta0.4_guided_K4_a0.1_hard_linear",
    "random_temp0.8_no_remask_guided_K3_a0.5_soft_log1p",
    "llada_argmax_remdm_confidence_tsw0.5_guided_K3_a0.1_soft_linear_boost",
    "llada_topp0.9_remdm_confidence_tsw1.0_guided_K5_a0.05_soft_linear_fresh_protect"])
@pytest.mark.parametrize("per_position", [False, True])
def test_shared_proposal_equals_the_tiled_reference(model, process, name, per_position):
    proc = PerPositionProcess(process) if per_position else process
    ref = guided(model, proc, name, shared_proposal=False, early_stop=False, compact=False)
    fast = guided(model, proc, name)
    assert torch.equal(fast.tokens, ref.tokens)
    assert fast.diagnostics == ref.diagnostics
