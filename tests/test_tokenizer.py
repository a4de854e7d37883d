"""Tokenizer/detokenizer round trips and PAD vs no-edge placement (spec §1.6, §11.2)."""

from __future__ import annotations

import numpy as np
import pytest

from bdgen.data.graph import (
    Graph,
    detokenize,
    pad_mask_from_tokens,
    tokenize,
    tokenize_many,
)
from bdgen.data.vocab import (
    EDGE_MASK,
    EDGE_NO_EDGE,
    EDGE_PAD,
    NODE_MASK,
    NODE_PAD,
    RPLAN_VOCAB,
    VocabConfig,
)


def random_graph(rng: np.random.Generator, n: int) -> Graph:
    types = tuple(int(t) for t in rng.integers(0, 13, n))
    triples = tuple((i, j, int(rng.integers(0, 10)))
                    for i in range(n) for j in range(i + 1, n) if rng.random() < 0.5)
    return Graph(types, triples)


@pytest.mark.parametrize("n", range(1, 9))
def test_round_trip_every_room_count(n):
    rng = np.random.default_rng(n)
    for _ in range(25):
        g = random_graph(rng, n)
        tokens, pad = tokenize(g, RPLAN_VOCAB)
        back = detokenize(tokens, pad, RPLAN_VOCAB)
        assert back.node_types == g.node_types
        assert set(back.edge_triples) == set(g.edge_triples)
        assert back.key() == g.key()


def test_layout_pad_vs_no_edge():
    g = Graph((0, 3, 7, 2), ((0, 1, 7), (1, 3, 4)))
    tokens, pad = tokenize(g, RPLAN_VOCAB)
    assert tokens.dtype == np.int64 and pad.dtype == bool and tokens.shape == (36,)
    assert tokens[:8].tolist() == [0, 3, 7, 2, NODE_PAD, NODE_PAD, NODE_PAD, NODE_PAD]
    assert (pad == RPLAN_VOCAB.pad_mask(4)).all()
    # Real edge slots: (0,1)=8 (0,2)=9 (0,3)=10 (1,2)=15 (1,3)=16 (2,3)=21.
    expected = {8: 7, 9: EDGE_NO_EDGE, 10: EDGE_NO_EDGE, 15: EDGE_NO_EDGE, 16: 4,
                21: EDGE_NO_EDGE}
    for idx in range(8, 36):
        assert tokens[idx] == expected.get(idx, EDGE_PAD)


def test_detokenized_triples_sorted_by_position():
    g = Graph((0, 1, 2, 3), ((2, 3, 1), (0, 3, 5), (0, 1, 2)))
    back = detokenize(*tokenize(g, RPLAN_VOCAB), RPLAN_VOCAB)
    assert back.edge_triples == ((0, 1, 2), (0, 3, 5), (2, 3, 1))


def test_last_triple_wins():
    g = Graph((0, 1), ((0, 1, 2), (0, 1, 6)))
    tokens, _ = tokenize(g, RPLAN_VOCAB)
    assert tokens[8] == 6


@pytest.mark.parametrize("graph", [
    Graph((), ()),                                  # zero rooms
    Graph(tuple([0] * 9), ()),                      # more than n_max
    Graph((0, 13), ()),                             # MASK as a room type
    Graph((0, -1), ()),
    Graph((0, 1), ((1, 0, 2),)),                    # i > j
    Graph((0, 1), ((0, 0, 2),)),                    # self loop
    Graph((0, 1), ((0, 2, 2),)),                    # j out of range
    Graph((0, 1), ((0, 1, 10),)),                   # no-edge is not a relation
    Graph((0, 1), ((0, 1, -1),)),
])
def test_tokenize_rejects_invalid(graph):
    with pytest.raises(ValueError):
        tokenize(graph, RPLAN_VOCAB)


def test_detokenize_rejects_mask_and_pad_in_real_slots():
    tokens, pad = tokenize(Graph((0, 1, 2), ((0, 1, 3),)), RPLAN_VOCAB)
    for idx, bad in ((1, NODE_MASK), (2, NODE_PAD), (8, EDGE_MASK), (9, EDGE_PAD)):
        broken = tokens.copy()
        broken[idx] = bad
        with pytest.raises(ValueError):
            detokenize(broken, pad, RPLAN_VOCAB)
    with pytest.raises(ValueError):
        detokenize(tokens[:35], pad[:35], RPLAN_VOCAB)


def test_detokenize_ignores_pad_positions():
    tokens, pad = tokenize(Graph((0, 1), ((0, 1, 3),)), RPLAN_VOCAB)
    noisy = tokens.copy()
    noisy[~pad] = EDGE_MASK  # anything may sit at PAD positions
    assert detokenize(noisy, pad, RPLAN_VOCAB) == Graph((0, 1), ((0, 1, 3),))


def test_other_n_max():
    vc = VocabConfig(14)
    g = Graph(tuple(range(13)) + (0,), ((0, 13, 9), (12, 13, 0)))
    tokens, pad = tokenize(g, vc)
    assert tokens.shape == (105,) and pad.all()
    assert detokenize(tokens, pad, vc) == g


def test_tokenize_many_and_pad_mask_from_tokens():
    rng = np.random.default_rng(0)
    graphs = [random_graph(rng, n) for n in (1, 4, 8, 6)]
    tokens, pads = tokenize_many(graphs, RPLAN_VOCAB)
    assert tokens.shape == pads.shape == (4, 36)
    for k, g in enumerate(graphs):
        t, p = tokenize(g, RPLAN_VOCAB)
        assert (tokens[k] == t).all() and (pads[k] == p).all()
    assert (pad_mask_from_tokens(tokens, RPLAN_VOCAB) == pads).all()
    # An all-PAD node row is clamped to one room.
    empty = np.full((1, 36), NODE_PAD)
    assert pad_mask_from_tokens(empty, RPLAN_VOCAB)[0].sum() == 1


def test_graph_helpers():
    g = Graph((7, 0, 7), ((1, 2, 4), (0, 1, 2)))
    assert g.num_rooms == 3 and g.archetype() == (0, 7, 7)
    assert g.key() == (3, (7, 0, 7), ((0, 1, 2), (1, 2, 4)))
    assert g.as_dict() == {"node_types": [7, 0, 7], "edge_triples": [[1, 2, 4], [0, 1, 2]],
                           "num_rooms": 3}
