"""Several seeds in one batch (bdgen.diffusion.seed_batch): each seed's tokens equal to
sampling it alone, for every unmasking/remasking family, v1- and v2-shaped processes."""

from __future__ import annotations

import pytest
import torch
from _model_support import perturb

from bdgen.data.vocab import RPLAN_VOCAB
from bdgen.diffusion import sampler
from bdgen.diffusion.fast_sampling import sample
from bdgen.diffusion.method import Method
from bdgen.diffusion.process import ScheduleProcess
from bdgen.diffusion.sampler import draw_num_rooms
from bdgen.diffusion.schedules import make_schedule
from bdgen.diffusion.seed_batch import RowStreams, sample_seeds
from bdgen.errors import BdgenError
from bdgen.model.denoiser import MODEL_PRESETS, BDDenoiser

ROOMS = [0.0, 0.0, 0.0, 0.003, 0.072, 0.311, 0.362, 0.252]
SEEDS = (42, 123, 456)


@pytest.fixture(scope="module")
def model() -> BDDenoiser:
    m = BDDenoiser(MODEL_PRESETS["tiny"], RPLAN_VOCAB).eval()
    perturb(m.parameters(), 0.3)
    return m


@pytest.mark.parametrize("name", ["random_argmax_no_remask", "llada_topp0.9_no_remask",
                                  "llada_topp0.9_remdm_confidence_tsw1.0",
                                  "random_temp0.8_remdm_cap_eta0.4"])
@pytest.mark.parametrize("n, batch_size", [(30, None), (40, 16)])
def test_batched_seeds_equal_each_seed_alone(model, name, n, batch_size):
    process = ScheduleProcess(make_schedule("loglinear"))
    method = Method.parse(name)
    rooms = {s: draw_num_rooms(ROOMS, n, s) for s in SEEDS}
    together = sample_seeds(model, process, RPLAN_VOCAB, rooms, method, 12,
                            batch_size=batch_size)
    for s in SEEDS:
        alone = sample(model, process, RPLAN_VOCAB, rooms[s], method, 12, s,
                       batch_size=batch_size, workers=1)
        assert torch.equal(together[s].tokens, alone.tokens), (name, s)
        assert torch.equal(together[s].pad_mask, alone.pad_mask)
        assert torch.equal(together[s].num_rooms, alone.num_rooms)
        reference = sampler.sample(model, process, RPLAN_VOCAB, rooms[s], method, 12, s,
                                   batch_size=batch_size)
        assert torch.equal(together[s].tokens, reference.tokens)  # the reference loop too


def test_row_streams_draw_what_each_block_draws_alone():
    g = [torch.Generator().manual_seed(i) for i in (1, 2)]
    streams = RowStreams([(g[0], 3), (g[1], 2)])
    got = streams.rand((5, 4), torch.device("cpu"))
    a = torch.rand((3, 4), generator=torch.Generator().manual_seed(1))
    b = torch.rand((2, 4), generator=torch.Generator().manual_seed(2))
    assert torch.equal(got, torch.cat([a, b]))
    with pytest.raises(BdgenError, match="rows"):
        streams.rand((4, 4), torch.device("cpu"))
