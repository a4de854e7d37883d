"""TF32 as an explicit precision (``_tf32``): a name of its own that round-trips, and on
CPU (no TF32 units) exactly the float32 forward and samples."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from _model_support import perturb

from bdgen.data.vocab import RPLAN_VOCAB
from bdgen.diffusion.method import Method
from bdgen.diffusion.process import ScheduleProcess
from bdgen.diffusion.sampler import draw_num_rooms, model_logits, sample
from bdgen.diffusion.schedules import make_schedule
from bdgen.model.denoiser import MODEL_PRESETS, BDDenoiser
from bdgen.model.precision import autocast

ROOMS = [0.0, 0.0, 0.0, 0.003, 0.072, 0.311, 0.362, 0.252]


@pytest.mark.parametrize("name", ["llada_topp0.9_remdm_confidence_tsw1.0_tf32",
                                  "v2_random_argmax_no_remask_tf32",
                                  "random_topp0.9_remdm_cap_eta0.4_tsw0.5_tf32"])
def test_tf32_names_round_trip_and_differ_from_fp32(name: str) -> None:
    m = Method.parse(name)
    assert m.precision == "tf32" and m.format() == name
    assert m.legacy_config()["precision"] == "tf32"
    assert dataclasses.replace(m, precision="fp32").format() == name.removesuffix("_tf32")


def test_tf32_on_cpu_is_the_float32_forward_and_restores_the_setting() -> None:
    m = BDDenoiser(MODEL_PRESETS["tiny"], RPLAN_VOCAB).eval()
    perturb(m.parameters(), 0.3)
    rooms = draw_num_rooms(ROOMS, 20, 5)
    pad = torch.from_numpy(RPLAN_VOCAB.pad_mask_table)[rooms]
    x = torch.randint(0, 5, pad.shape)
    t = torch.full((), 0.5)
    with torch.inference_mode():
        assert torch.equal(model_logits(m, x, pad, t, "tf32"), model_logits(m, x, pad, t, "fp32"))
    before = torch.get_float32_matmul_precision()
    with autocast("cpu", "tf32"):
        pass
    assert torch.get_float32_matmul_precision() == before
    process = ScheduleProcess(make_schedule("loglinear"))
    fp32 = Method.parse("llada_topp0.9_remdm_confidence_tsw1.0")
    tf32 = dataclasses.replace(fp32, precision="tf32")
    a = sample(m, process, RPLAN_VOCAB, rooms, fp32, 8, 5)
    b = sample(m, process, RPLAN_VOCAB, rooms, tf32, 8, 5)
    assert torch.equal(a.tokens, b.tokens)
