"""The ``_compiled`` methods' loop (bdgen/diffusion/compiled_sampling.py): with dynamo's
``eager`` backend (traced, no generated code) its tokens are the reference loop's bit for
bit, and a sweep's worth of batches and methods does not exhaust dynamo's recompiles."""

from __future__ import annotations

import pytest
import torch

from bdgen.data.vocab import RPLAN_VOCAB
from bdgen.diffusion.compiled_sampling import sample_batch_compiled
from bdgen.diffusion.fast_sampling import sample, sample_batch
from bdgen.diffusion.method import Method
from bdgen.diffusion.process import ScheduleProcess
from bdgen.diffusion.sampler import draw_num_rooms
from bdgen.diffusion.schedules import make_schedule
from bdgen.model.denoiser import MODEL_PRESETS, AdaLNBlock
from bdgen.model.fast_forward import FastDenoiser

ROOMS = [0.0, 0.0, 0.0, 0.003, 0.072, 0.311, 0.362, 0.252]
METHODS = [
    "llada_topp0.9_remdm_confidence_tsw0.5",
    "random_topp0.9_remdm_cap_eta0.4",
    "random_argmax_no_remask",
    "llada_temp0.7_no_remask",
    "random_topp0.9_remdm_rescale_eta0.2_tsw0.7_bf16",
]


@pytest.fixture(scope="module")
def model() -> FastDenoiser:
    torch.manual_seed(0)
    m = FastDenoiser(MODEL_PRESETS["tiny"], RPLAN_VOCAB)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
    return m.eval()


PROCESS = ScheduleProcess(make_schedule("loglinear"))


@pytest.mark.parametrize("name", METHODS)
def test_eager_backend_gives_the_reference_tokens(model: FastDenoiser, name: str) -> None:
    method = Method.parse(name)
    rooms = draw_num_rooms(ROOMS, 48, 3)
    ref, calls, _ = sample_batch(model, PROCESS, RPLAN_VOCAB, rooms, method, 20,
                                 torch.Generator().manual_seed(7), compact=False)
    got, got_calls, _ = sample_batch_compiled(model, PROCESS, RPLAN_VOCAB, rooms, method, 20,
                                              torch.Generator().manual_seed(7),
                                              backend="eager")
    assert torch.equal(got, ref)
    assert got_calls == calls


def test_compiled_name_samples_as_its_eager_twin_on_cpu(model: FastDenoiser) -> None:
    rooms = draw_num_rooms(ROOMS, 40, 5)
    twin = sample(model, PROCESS, RPLAN_VOCAB, rooms,
                  Method.parse("llada_topp0.9_remdm_confidence_tsw1.0_bf16"), 12, 9)
    got = sample(model, PROCESS, RPLAN_VOCAB, rooms,
                 Method.parse("llada_topp0.9_remdm_confidence_tsw1.0_bf16_compiled"), 12, 9)
    assert torch.equal(got.tokens, twin.tokens)


def test_new_batches_reuse_the_compiled_step(model: FastDenoiser) -> None:
    """A new batch (a new Plan, new tensors of the same shapes) must not recompile the step:
    it is specialised on settings (last step, remasking fires), not on objects."""
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list

    from bdgen.diffusion.compiled_sampling import step_tokens

    def variants() -> int:
        return len(_debug_get_cache_entry_list(step_tokens.__code__))

    method = Method.parse(METHODS[0])

    def run(seed: int) -> None:
        sample_batch_compiled(model, PROCESS, RPLAN_VOCAB, draw_num_rooms(ROOMS, 32, seed),
                              method, 10, torch.Generator().manual_seed(seed),
                              backend="eager")

    run(11)  # every variant of this method at this batch shape: all 10 steps run
    warm = variants()
    for seed in (12, 13, 14):
        run(seed)
    assert variants() == warm


def test_real_rows_forward_matches_the_dense_forward(model: FastDenoiser) -> None:
    """The PAD-skipping forward of the CUDA path (rows given once per batch) computes the
    dense forward's logits at every real position (up to float rounding)."""
    from bdgen.diffusion.sampler import model_logits
    from bdgen.model.fast_forward import real_rows

    rooms = draw_num_rooms(ROOMS, 24, 8)
    pad = torch.from_numpy(RPLAN_VOCAB.pad_mask_table)[rooms]
    x = torch.randint(0, 10, pad.shape, generator=torch.Generator().manual_seed(2))
    t = torch.full((), 0.4)
    with torch.inference_mode():
        model.pack_real_positions = False
        dense = model_logits(model, x, pad, t)
        model.pack_real_positions = None
        packed = model_logits(model, x, pad, t, real_rows=real_rows(pad))
    real = pad.unsqueeze(-1).expand_as(dense) & torch.isfinite(dense)
    assert torch.allclose(packed[real], dense[real], atol=1e-5, rtol=1e-5)
    assert torch.isfinite(packed[pad]).any(-1).all()
    with pytest.raises(ValueError, match="shared time"):
        model.trunk_sampling(torch.zeros(24, pad.shape[1], 32), torch.full((24,), 0.4), pad,
                             real_rows(pad), AdaLNBlock.attention)


def test_compiled_loop_with_packed_rows_runs_on_cpu(model: FastDenoiser) -> None:
    """The packed-rows loop (the CUDA default) on CPU with the eager backend: valid tokens,
    PAD where the pad mask says, and mostly the dense loop's tokens (rounding differs)."""
    method = Method.parse(METHODS[0])
    rooms = draw_num_rooms(ROOMS, 48, 3)
    dense, _, _ = sample_batch_compiled(model, PROCESS, RPLAN_VOCAB, rooms, method, 20,
                                        torch.Generator().manual_seed(7), backend="eager")
    packed, _, _ = sample_batch_compiled(model, PROCESS, RPLAN_VOCAB, rooms, method, 20,
                                         torch.Generator().manual_seed(7), backend="eager",
                                         pack_rows=True)
    pad = torch.from_numpy(RPLAN_VOCAB.pad_mask_table)[rooms]
    assert packed.shape == dense.shape and packed.dtype == dense.dtype
    assert (packed[~pad] == dense[~pad]).all()
    assert (packed == dense).float().mean() > 0.9


def test_a_frozen_forward_is_compiled_again_when_the_weights_change(model: FastDenoiser
                                                                      ) -> None:
    """Freezing compiles the weights in; an in-place change of them (a load, a training
    step) must give a new compiled forward, not the old weights."""
    from bdgen.diffusion.compiled_sampling import compiled

    kernels = compiled("eager")
    first = kernels.model(model, False, freeze=True)
    assert kernels.model(model, False, freeze=True) is first
    with torch.no_grad():
        next(model.parameters()).mul_(1.0)
    assert kernels.model(model, False, freeze=True) is not first
    assert kernels.model(model, False, freeze=False) is kernels.model(model, False)
