"""The ``_compiled`` loop with its state on the device (bdgen/diffusion/step_graphs.py):
on CPU its steps, run without graphs, give the reference loop's tokens bit for bit (the
step times from tables, the rates from device tensors, the draws in order, several seeds'
row streams); on CUDA the whole-step graphs give the per-step compiled loop's tokens."""

from __future__ import annotations

import copy

import pytest
import torch
from _model_support import perturb

from bdgen.data.vocab import RPLAN_VOCAB
from bdgen.diffusion.compiled_sampling import sample_batch_compiled
from bdgen.diffusion.fast_sampling import sample_batch
from bdgen.diffusion.method import Method
from bdgen.diffusion.process import RateNetworkProcess, ScheduleProcess
from bdgen.diffusion.rate_network import RateNetwork
from bdgen.diffusion.sampler import chunk_generator, draw_num_rooms
from bdgen.diffusion.schedules import make_schedule
from bdgen.diffusion.seed_batch import RowStreams
from bdgen.diffusion.step_graphs import generators_of
from bdgen.model.denoiser import MODEL_PRESETS
from bdgen.model.fast_forward import FastDenoiser

ROOMS = [0.0, 0.0, 0.0, 0.003, 0.072, 0.311, 0.362, 0.252]
METHODS = [
    "llada_topp0.9_remdm_confidence_tsw1.0",
    "random_topp0.9_remdm_cap_eta0.4",
    "random_argmax_no_remask",
    "llada_temp0.7_no_remask",
    "v2_llada_topp0.9_remdm_confidence_tsw0.5",
    "v2_random_topp0.9_remdm_rescale_eta0.2_tsw0.7_bf16",
]


@pytest.fixture(scope="module")
def nets() -> tuple[FastDenoiser, ScheduleProcess, RateNetworkProcess]:
    torch.manual_seed(0)
    model, rate = FastDenoiser(MODEL_PRESETS["tiny"], RPLAN_VOCAB), RateNetwork(vocab=RPLAN_VOCAB)
    perturb([*model.parameters(), *rate.parameters()], 0.3)
    return (model.eval(), ScheduleProcess(make_schedule("loglinear")),
            RateNetworkProcess(rate.eval()))


@pytest.mark.parametrize("name", METHODS)
def test_device_side_steps_give_the_reference_tokens(nets, name: str) -> None:
    model, v1, v2 = nets
    method = Method.parse(name)
    process = v2 if method.v2 else v1
    rooms = draw_num_rooms(ROOMS, 40, 3)
    ref, calls, rows = sample_batch(model, process, RPLAN_VOCAB, rooms, method, 16,
                                    torch.Generator().manual_seed(7), compact=False)
    got, got_calls, got_rows = sample_batch_compiled(
        model, process, RPLAN_VOCAB, rooms, method, 16, torch.Generator().manual_seed(7),
        backend="eager", whole_steps=True)
    assert torch.equal(got, ref)
    assert (got_calls, got_rows) == (calls, rows)


def test_device_side_steps_draw_each_seed_from_its_own_stream(nets) -> None:
    """Two seeds' blocks in one batch (how a study samples a method's seeds at once)."""
    model, v1, _ = nets
    method = Method.parse("random_topp0.9_remdm_cap_eta0.4")
    rooms = draw_num_rooms(ROOMS, 30, 4)

    def streams() -> RowStreams:
        return RowStreams([(chunk_generator(1, 0, "cpu"), 12), (chunk_generator(2, 0, "cpu"), 18)])

    ref, _, _ = sample_batch(model, v1, RPLAN_VOCAB, rooms, method, 12, streams(),  # type: ignore[arg-type]
                             compact=False)
    got, _, _ = sample_batch_compiled(model, v1, RPLAN_VOCAB, rooms, method, 12,
                                      streams(), backend="eager", whole_steps=True)  # type: ignore[arg-type]
    assert torch.equal(got, ref)
    assert len(generators_of(streams())) == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
@pytest.mark.parametrize(("name", "pack_rows"), [
    ("llada_topp0.9_remdm_confidence_tsw1.0_bf16", None),   # dense: the loop is kept
    ("random_argmax_no_remask", None),                        # packed rows: a new loop
    (METHODS[4], False),                                      # learned rates, loop kept
    (METHODS[4], True)])
def test_whole_step_graphs_give_the_per_step_loops_tokens(nets, name: str,
                                                          pack_rows: bool | None) -> None:
    """Two batches in a row (the second reuses the first's graphs where they are kept):
    the tokens and the generator's final state of the loop with only the forward graphed."""
    dev = torch.device("cuda")
    model, v1, v2 = (copy.deepcopy(n).to(dev) for n in nets)
    method = Method.parse(name + "_compiled")
    process = v2 if method.v2 else v1
    for seed in (7, 8):
        rooms = draw_num_rooms(ROOMS, 200, seed).to(dev)
        g_ref, g_got = chunk_generator(seed, 0, dev), chunk_generator(seed, 0, dev)
        per_step, _, _ = sample_batch_compiled(model, process, RPLAN_VOCAB, rooms, method, 30,
                                               g_ref, whole_steps=False, pack_rows=pack_rows)
        graphed, _, _ = sample_batch_compiled(model, process, RPLAN_VOCAB, rooms, method, 30,
                                              g_got, pack_rows=pack_rows, whole_steps=True)
        assert torch.equal(graphed, per_step)
        assert torch.equal(g_got.get_state(), g_ref.get_state())


def test_a_reused_loop_samples_each_batch_as_a_new_one(nets) -> None:
    """A kept loop (how CUDA keeps its captured graphs) gets a new batch's pad mask, tokens,
    step index and generator state: three batches in a row, each as the reference samples
    it (the no-remasking method stops early), and the caller's generator left where the
    reference leaves it."""
    model, v1, v2 = nets
    for name in ("llada_topp0.9_remdm_confidence_tsw1.0", "v2_random_topp0.9_no_remask"):
        method = Method.parse(name)
        process = v2 if method.v2 else v1
        for seed in (3, 4, 5):
            rooms = draw_num_rooms(ROOMS, 24, seed)
            g_ref = torch.Generator().manual_seed(seed)
            g_got = torch.Generator().manual_seed(seed)
            ref, _, _ = sample_batch(model, process, RPLAN_VOCAB, rooms, method, 10, g_ref,
                                     compact=False)
            got, _, _ = sample_batch_compiled(model, process, RPLAN_VOCAB, rooms, method, 10,
                                              g_got, backend="eager", whole_steps=True,
                                              reuse=True)
            assert torch.equal(got, ref)
            assert torch.equal(g_got.get_state(), g_ref.get_state())
