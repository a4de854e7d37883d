"""Several seeds of one method sampled in one batch, each seed's samples identical to
sampling it alone (:func:`bdgen.diffusion.sampler.sample`).

Why: on a GPU one 1000-row batch leaves most of the device idle, so the 5 seeds of a
(model, method) run faster as one 5000-row batch than as five calls. What keeps each seed's
samples unchanged: :func:`~bdgen.diffusion.sampler.sample` gives chunk c of a seed its own
generator (``derive_seed(seed, "tokens", c)``) and every draw of a step is batch-shaped,
so a block of rows can draw from its own stream while sitting in a bigger batch
(:class:`RowStreams`). The model treats rows independently; early stop waits for the
slowest seed, which changes nothing for the others (a finished block has nothing masked
and no remasking can fire, so its extra steps reveal nothing). On CPU the per-row forward
results are bit-identical whatever the batch (tested); on CUDA the GEMM kernel may depend
on the batch size, so ``bench/study.py --device cuda`` checks the tokens there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from bdgen.data.vocab import VocabConfig
from bdgen.diffusion.method import Method
from bdgen.diffusion.process import ForwardProcess
from bdgen.diffusion.sampler import CPU_BATCH, SampleOutput, derive_seed, sample_batch
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


def sample_seeds(model, process: ForwardProcess, vocab: VocabConfig,
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
        n = int(r.shape[0])
        if n < 1:
            raise BdgenError(f"seed {seed}: num_samples must be >= 1")
        if int(r.min()) < 1 or int(r.max()) > vocab.n_max:
            raise BdgenError(f"num_rooms must lie in [1, {vocab.n_max}]")
        bs = int(batch_size or (min(n, CPU_BATCH) if device.type == "cpu" else n))
        for c, start in enumerate(range(0, n, bs)):
            g = torch.Generator(device=device).manual_seed(derive_seed(seed, "tokens", c))
            blocks.append((g, min(bs, n - start)))
        rooms.append(r)
        spans[int(seed)] = (at, at + n)
        at += n
    all_rooms = torch.cat(rooms)
    x, calls, rows = sample_batch(model, process, vocab, all_rooms.to(device), method, steps,
                                  RowStreams(blocks), early_stop=early_stop, compact=compact,
                                  model_batch=model_batch, cuda_graphs=cuda_graphs)
    x = x.cpu()
    pad_table = torch.from_numpy(vocab.pad_mask_table)
    out: dict[int, SampleOutput] = {}
    for seed, (a, b) in spans.items():  # copies, not views of the batch (torch.save
        r = all_rooms[a:b].cpu().long().clone()  # writes a view's whole storage)
        out[seed] = SampleOutput(x[a:b].clone(), pad_table[r], r, calls, rows)
    return out
