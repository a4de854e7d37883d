"""Several seeds of one method sampled in one batch, each seed's samples identical to
sampling it alone (:func:`bdgen.diffusion.fast_sampling.sample`, hence the reference
:func:`bdgen.diffusion.sampler.sample`).

Why: on a GPU one 1000-row batch leaves most of the device idle, so the 5 seeds of a
(model, method) run faster as one 5000-row batch than as five calls. What keeps each seed's
samples unchanged: ``sample`` gives chunk c of a seed its own generator
(:func:`~bdgen.diffusion.sampler.chunk_generator`) and every draw of a reverse step is
batch-shaped (:func:`bdgen.diffusion.reverse.uniform`), so a block of rows can draw from
its own stream while sitting in a bigger batch (:class:`RowStreams`). The model treats
rows independently; early stop waits for the slowest seed, which changes nothing for the
others (a finished block has nothing masked and no remasking can fire, so its extra steps
reveal nothing). On CPU the per-row forward results are bit-identical whatever the batch
(tested); on CUDA the GEMM kernel may depend on the batch size, so
``bench/study.py --device cuda`` and ``bench/sample.py --seed-batch K`` check the tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from bdgen.data.vocab import VocabConfig
from bdgen.diffusion.fast_sampling import sample_batch
from bdgen.diffusion.method import Method
from bdgen.diffusion.process import ForwardProcess
from bdgen.diffusion.sampler import SampleOutput, check_request, chunk_generator, chunk_starts
from bdgen.errors import BdgenError


class RowStreams:
    """Random draws for a batch made of blocks of rows, each block from its own generator.

    ``rand(shape)`` with ``shape[0]`` = the total rows returns the concatenation of each
    block's ``torch.rand((rows, *shape[1:]))``: exactly what the block would draw alone.
    """

    def __init__(self, blocks: Sequence[tuple[torch.Generator, int]]) -> None:
        self.blocks = list(blocks)
        self.rows = sum(r for _, r in self.blocks)

    def rand(self, shape: tuple[int, ...], device: torch.device,
             dtype: torch.dtype = torch.float32) -> Tensor:
        if shape[0] != self.rows:
            raise BdgenError(f"draw of {shape[0]} rows from streams of {self.rows} rows")
        return torch.cat([torch.rand((r, *shape[1:]), generator=g, device=device, dtype=dtype)
                          for g, r in self.blocks])


def sample_seeds(model: torch.nn.Module, process: ForwardProcess, vocab: VocabConfig,
                 rooms_by_seed: Mapping[int, Tensor], method: Method, steps: int,
                 device: torch.device | str = "cpu", batch_size: int | None = None,
                 early_stop: bool = True, compact: bool | None = None,
                 model_batch: int | None = None,
                 cuda_graphs: bool | None = None) -> dict[int, SampleOutput]:
    """Sample every seed's ``rooms_by_seed[seed]`` graphs in ONE batch; per seed the same
    tokens as ``sample(..., seed, batch_size=batch_size)``.

    ``batch_size``: the chunk size the seeds' solo runs use (default as in ``sample``: 128
    on CPU, all of a seed on CUDA); it fixes which rows share a generator. Model calls and
    rows evaluated are those of the whole batch, reported for each seed.
    """
    device = torch.device(device)
    blocks: list[tuple[torch.Generator, int]] = []
    rooms: list[Tensor] = []
    spans: dict[int, tuple[int, int]] = {}
    at = 0
    for seed, r in rooms_by_seed.items():
        check_request(vocab, r, steps)
        n = int(r.shape[0])
        starts, bs = chunk_starts(n, batch_size, device)
        for c, start in enumerate(starts):
            blocks.append((chunk_generator(int(seed), c, device), min(bs, n - start)))
        rooms.append(r)
        spans[int(seed)] = (at, at + n)
        at += n
    all_rooms = torch.cat(rooms)
    streams: Any = RowStreams(blocks)  # goes where the sampler takes a generator
    x, calls, rows = sample_batch(model, process, vocab, all_rooms.to(device), method, steps,
                                  streams, early_stop=early_stop, compact=compact,
                                  model_batch=model_batch, cuda_graphs=cuda_graphs)
    x = x.cpu()
    pad_table = torch.from_numpy(vocab.pad_mask_table)
    out: dict[int, SampleOutput] = {}
    for seed, (a, b) in spans.items():  # copies, not views of the batch (torch.save
        r = all_rooms[a:b].cpu().long().clone()  # writes a view's whole storage)
        out[seed] = SampleOutput(x[a:b].clone(), pad_table[r], r, calls, rows)
    return out
