"""Hard and soft violations (G2), on hand-built graphs and the spec's worked example."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bdgen.data.graph import Graph, detokenize, tokenize
from bdgen.data.vocab import (
    BATHROOM,
    EDGE_MASK,
    EDGE_NO_EDGE,
    KITCHEN,
    LIVING_ROOM,
    MASTER_ROOM,
    NODE_MASK,
    VocabConfig,
)
from bdgen.guidance.constraints import ConstraintSet
from bdgen.guidance.schema import compile_specs
from bdgen.guidance.violations import (
    effective_probs,
    hard_decode,
    hard_violations,
    join_logits,
    soft_violations,
    soft_violations_of_probs,
)

VOCAB = VocabConfig(8)
N, S = VOCAB.n_max, VOCAB.seq_len
INF = float("inf")

CS2 = [
    {"name": "one_kitchen", "type": "ExactCount", "room_type": "Kitchen", "target": 1},
    {"name": "kitchen_near_living", "type": "RequireAdj", "type_a": "Kitchen",
     "type_b": "LivingRoom"},
    {"name": "no_bath_kitchen", "type": "ForbidAdj", "type_a": "Bathroom", "type_b": "Kitchen"},
    {"name": "between_2_and_3_bathrooms", "type": "CountRange", "room_type": "Bathroom",
     "lo": 2, "hi": 3},
]
# every type, both same-type and mixed adjacency, on several room types
WIDE = CS2 + [
    {"name": "two_bath_pairs", "type": "RequireAdj", "type_a": "Bathroom", "type_b": "Bathroom"},
    {"name": "no_second_pairs", "type": "ForbidAdj", "type_a": "SecondRoom",
     "type_b": "SecondRoom"},
    {"name": "few_balconies", "type": "CountRange", "room_type": "Balcony", "lo": 0, "hi": 1},
    {"name": "no_storage", "type": "ExactCount", "room_type": "Storage", "target": 0,
     "weight": 0.5},
    {"name": "living_near_master", "type": "RequireAdj", "type_a": "MasterRoom",
     "type_b": "LivingRoom"},
]


def cs2() -> ConstraintSet:
    return compile_specs(CS2)


# --- hard violations on decoded graphs (G2.1) -------------------------------------------------
def test_hard_on_hand_built_graphs():
    cs = compile_specs(WIDE)
    # 0 Kitchen, 1 LivingRoom, 2 Bathroom, 3 Bathroom, 4 SecondRoom, 5 SecondRoom
    g = Graph((KITCHEN, LIVING_ROOM, BATHROOM, BATHROOM, 7, 7),
              ((0, 1, 4), (0, 2, 2), (0, 3, 9), (2, 3, 5), (4, 5, 0), (1, 4, 7)))
    assert cs.hard(g) == (0.0, 0.0, 2.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0)
    assert all(isinstance(v, float) for v in cs.hard(g))
    # inside (4) counts as an adjacency; without the (0, 1) edge kitchen_near_living fails
    g2 = Graph((KITCHEN, LIVING_ROOM, BATHROOM), ((1, 2, 3),))
    assert cs.hard(g2)[:4] == (0.0, 1.0, 0.0, 1.0)
    # counts: |count - target|, and the range distance on either side
    g3 = Graph((KITCHEN, KITCHEN, KITCHEN, BATHROOM, BATHROOM, BATHROOM, BATHROOM, 9), ())
    assert cs.hard(g3)[0] == 2.0 and cs.hard(g3)[3] == 1.0 and cs.hard(g3)[6] == 0.0
    assert cs.hard(Graph((9, 9, 9), ()))[6] == 2.0
    assert cs.hard(Graph((LIVING_ROOM,), ()))[:4] == (1.0, 1.0, 0.0, 2.0)


def random_graph(rng: np.random.Generator) -> Graph:
    n = int(rng.integers(1, N + 1))
    types = tuple(int(t) for t in rng.integers(0, 13, n))
    triples = tuple((i, j, int(rng.integers(0, 10))) for i in range(n) for j in range(i + 1, n)
                    if rng.random() < 0.5)
    return Graph(types, triples)


def committed_batch(rng, size) -> tuple[torch.Tensor, torch.Tensor, list[Graph]]:
    graphs = [random_graph(rng) for _ in range(size)]
    toks, pads = zip(*(tokenize(g, VOCAB) for g in graphs))
    return torch.from_numpy(np.stack(toks)), torch.from_numpy(np.stack(pads)), graphs


def subs_logits(rng, shape) -> torch.Tensor:
    """Random denoiser-like logits ``[..., S, 15]``: -inf at MASK/PAD and past the edge
    vocabulary."""
    g = torch.Generator().manual_seed(int(rng.integers(1 << 30)))
    node = torch.randn((*shape, N, 15), generator=g) * 2
    node[..., 13:] = -INF
    edge = torch.randn((*shape, VOCAB.n_edges, 13), generator=g) * 2
    edge[..., 11:] = -INF
    return join_logits(node, edge)


def test_batched_hard_equals_graph_path():
    rng = np.random.default_rng(0)
    cs = compile_specs(WIDE)
    tokens, pads, graphs = committed_batch(rng, 200)
    got = hard_violations(cs, tokens, pads)
    assert got.dtype == torch.float64 and got.shape == (200, len(WIDE))
    want = torch.tensor([cs.hard(g) for g in graphs], dtype=torch.float64)
    assert torch.equal(got, want)
    # a [K, B] batch is the same numbers
    assert torch.equal(hard_violations(cs, tokens.view(4, 50, S), pads.view(4, 50, S)),
                       want.view(4, 50, -1))


def test_soft_equals_hard_when_committed():
    rng = np.random.default_rng(1)
    cs = compile_specs(WIDE)
    tokens, pads, graphs = committed_batch(rng, 300)
    logits = subs_logits(rng, (300,))
    soft = soft_violations(cs, tokens, logits, pads)
    hard = hard_violations(cs, tokens, pads)
    require = [i for i, c in enumerate(cs.constraints) if c.kind == "RequireAdj"]
    others = [i for i in range(len(cs)) if i not in require]
    assert torch.equal(soft[:, others], hard[:, others])
    # RequireAdj: 1 exactly when failed; about 1e-15 (the clamp), not 0, when satisfied by a
    # single pair; 0 when satisfied by two or more
    r_soft, r_hard = soft[:, require], hard[:, require]
    assert torch.equal(r_soft[r_hard == 1], r_hard[r_hard == 1])
    sat = r_soft[r_hard == 0]
    assert sat.numel() and (sat <= 1.2e-15).all() and (sat > 0).any()
    single = 1 - (1 - math.exp(math.log1p(-(1 - 1e-15))))  # 9.992e-16 in float64
    assert set(sat.tolist()) == {0.0, single}


def appendix_example() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """3 rooms: Kitchen; MASK (LivingRoom .6, Bathroom .3, MasterRoom .1); Bathroom. Edge
    (0,1) MASK with P(no-edge) .25; (0,2) no-edge; (1,2) left-of."""
    g = Graph((KITCHEN, LIVING_ROOM, BATHROOM), ((1, 2, 2),))
    tokens, pad = (torch.from_numpy(a) for a in tokenize(g, VOCAB))
    tokens[1] = NODE_MASK
    e01 = N + VOCAB.pair_to_pos(0, 1)
    tokens[e01] = EDGE_MASK
    assert tokens[N + VOCAB.pair_to_pos(0, 2)] == EDGE_NO_EDGE
    probs = torch.full((S, 15), 0.0, dtype=torch.float64)
    probs[:, 0] = 1.0                          # any other row: irrelevant (committed/PAD)
    probs[1] = 0.0
    probs[1, LIVING_ROOM], probs[1, BATHROOM], probs[1, MASTER_ROOM] = 0.6, 0.3, 0.1
    probs[e01] = 0.0
    probs[e01, EDGE_NO_EDGE], probs[e01, 2], probs[e01, 3] = 0.25, 0.5, 0.25
    return tokens, pad, torch.log(probs)


def test_appendix_soft_violations():
    tokens, pad, logits = appendix_example()
    v = soft_violations(cs2(), tokens, logits, pad)
    assert v.dtype == torch.float64
    assert v.tolist() == pytest.approx([0.0, 0.55, 0.225, 0.7], abs=1e-12)
    probs = effective_probs(tokens, logits, pad)
    assert probs[1, LIVING_ROOM].item() == pytest.approx(0.6, abs=1e-15)
    assert probs[0].tolist() == [0.0] * 2 + [1.0] + [0.0] * 12  # committed: one-hot
    assert not probs[~pad].any()                                 # PAD: zero rows


def test_candidates_share_logits_by_broadcasting_and_batches_match_rows():
    rng = np.random.default_rng(2)
    cs = compile_specs(WIDE)
    tokens, pads, _ = committed_batch(rng, 12)
    logits = subs_logits(rng, (12,))
    x = tokens.clone()
    hide = torch.from_numpy(rng.random(x.shape) < 0.6) & pads
    mask_tok = torch.tensor([NODE_MASK] * N + [EDGE_MASK] * VOCAB.n_edges)
    x = torch.where(hide, mask_tok, x)
    cand = torch.stack([x, tokens, torch.where(hide & (torch.arange(S) < N), mask_tok, tokens)])
    shared = soft_violations(cs, cand, logits, pads)                    # [3, 12, C]
    tiled = soft_violations(cs, cand, logits.expand(3, *logits.shape), pads.expand(3, -1, -1))
    assert shared.shape == (3, 12, len(cs)) and torch.equal(shared, tiled)
    # the same numbers through the full effective-probability tensor
    probs = effective_probs(cand, logits, pads)
    via_probs = soft_violations_of_probs(cs, probs, pads.expand(3, -1, -1))
    assert torch.allclose(shared, via_probs, rtol=0, atol=1e-15)
    rows = torch.stack([soft_violations(cs, cand[k, b], logits[b], pads[b])
                        for k in range(3) for b in range(12)]).view(3, 12, -1)
    assert torch.allclose(shared, rows, rtol=0, atol=1e-13)
    names = [c.kind for c in cs.constraints]
    r = shared[..., [i for i, k in enumerate(names) if k == "RequireAdj"]]
    assert ((r >= 0) & (r <= 1)).all() and (shared >= 0).all()
    # fully masked: every violation finite, and smooth in the logits (tiny change, tiny step)
    full = torch.where(pads, mask_tok, tokens)
    a = soft_violations(cs, full, logits, pads)
    b = soft_violations(cs, full, logits + 1e-7 * torch.randn(logits.shape).nan_to_num(), pads)
    assert torch.isfinite(a).all() and (a - b).abs().max() < 1e-5


def test_hard_decode_fills_masks_with_the_argmax():
    rng = np.random.default_rng(3)
    tokens, pads, _ = committed_batch(rng, 20)
    logits = subs_logits(rng, (20,))
    mask_tok = torch.tensor([NODE_MASK] * N + [EDGE_MASK] * VOCAB.n_edges)
    hide = torch.from_numpy(rng.random(tokens.shape) < 0.5) & pads
    x = torch.where(hide, mask_tok, tokens)
    out = hard_decode(x, logits)
    assert torch.equal(out[~hide], x[~hide])
    assert torch.equal(out[hide], logits.argmax(-1)[hide])
    for row, pad in zip(out.numpy(), pads.numpy()):
        detokenize(row, pad, VOCAB)  # decodable: no MASK/PAD argmax
    # candidates [K, B] with shared logits
    assert torch.equal(hard_decode(x.expand(2, -1, -1), logits)[1], out)


def test_empty_set_and_single_rows():
    empty = ConstraintSet(())
    tokens, pad, logits = appendix_example()
    assert soft_violations(empty, tokens, logits, pad).shape == (0,)
    assert hard_violations(empty, tokens.expand(3, -1), pad).shape == (3, 0)
    assert math.isclose(soft_violations(cs2(), tokens, logits, pad)[1].item(), 0.55,
                        abs_tol=1e-12)
