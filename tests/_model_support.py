"""Small denoiser set-ups shared by the model, loss and sampler tests: a few graphs as a
token batch, tiny models whose outputs depend on the input, and a v2-shaped process."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from bdgen.data.graph import Graph, tokenize_many
from bdgen.data.vocab import RPLAN_VOCAB, VocabConfig
from bdgen.diffusion.process import ScheduleProcess

#: Three RPLAN graphs of 4, 6 and 8 rooms (the model tests' batch).
RPLAN_GRAPHS = [
    Graph((0, 2, 3, 9), ((0, 1, 2), (0, 2, 7), (1, 3, 4))),
    Graph((0, 1, 7, 7, 3, 2), ((0, 1, 2), (0, 5, 6), (2, 3, 7), (4, 5, 0))),
    Graph((0, 1, 2, 3, 4, 5, 6, 7), ((0, 7, 9), (3, 6, 1))),
]

#: The v2 (learned rates) tests' vocabulary and graphs: 3 to 8 rooms.
V2_VOCAB = VocabConfig(8)
V2_GRAPHS = [
    Graph((0, 2, 3), ((0, 1, 2), (0, 2, 7))),
    Graph((0, 1, 3, 9), ((0, 1, 3), (1, 2, 4), (0, 3, 6))),
    Graph((0, 2, 7, 7, 3), ((0, 1, 2), (0, 2, 0), (2, 3, 7), (3, 4, 9))),
    Graph((0, 1, 2, 3, 5, 7, 9, 11), ((0, 1, 2), (1, 2, 3), (5, 6, 8), (6, 7, 1))),
]


def rplan_batch(graphs: Sequence[Graph] = RPLAN_GRAPHS) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens, PAD mask) of ``graphs`` in the RPLAN vocabulary."""
    tokens, pads = tokenize_many(graphs, RPLAN_VOCAB)
    return torch.from_numpy(tokens), torch.from_numpy(pads)


def v2_batch(repeat: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens, PAD mask) of :data:`V2_GRAPHS` repeated ``repeat`` times."""
    tokens, pad = tokenize_many(V2_GRAPHS * repeat, V2_VOCAB)
    return torch.as_tensor(tokens), torch.as_tensor(pad)


def randomised(cls, config, vocab: VocabConfig = RPLAN_VOCAB):
    """A ``cls(config, vocab)`` model in eval mode whose zero-initialised parts are random
    (every parameter drawn from N(0, 0.2) after ``torch.manual_seed(0)``), so outputs
    depend on the input."""
    torch.manual_seed(0)
    model = cls(config, vocab).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model


def perturb(params: Iterable[torch.nn.Parameter], scale: float, seed: int = 0) -> None:
    """Add ``scale`` x N(0, 1) noise to each parameter, in place, drawn in order from a
    generator of its own seeded ``seed`` (the global one is left alone), so that
    zero-initialised heads and modulations no longer give uniform logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn(p.shape, generator=g) * scale)


class PerPositionProcess:
    """A v2-shaped process: the schedule's values expanded to ``[B, S]`` (PAD: 0)."""

    def __init__(self, inner: ScheduleProcess) -> None:
        self.inner = inner

    def p_unmask(self, t_now, t_next, pad_mask):
        return self.inner.p_unmask(t_now, t_next, pad_mask).expand(pad_mask.shape) * pad_mask

    def sigma_max(self, t_now, t_next, pad_mask):
        return self.inner.sigma_max(t_now, t_next, pad_mask).expand(pad_mask.shape) * pad_mask
