"""Vocabulary, relation inversion, forbidden pairs and the edge layout (spec §1.3-1.5, §11.1)."""

from __future__ import annotations

import numpy as np
import pytest

from bdgen.data import vocab as V
from bdgen.data.vocab import RPLAN_VOCAB, VocabConfig

# Appendix B: edge position -> pair for n_max = 8 (sequence index = 8 + pos).
APPENDIX_B = [
    (0, 1), (0, 2), (0, 3), (0, 4), (0, 5), (0, 6), (0, 7),
    (1, 2), (1, 3), (1, 4), (1, 5), (1, 6), (1, 7),
    (2, 3), (2, 4), (2, 5), (2, 6), (2, 7),
    (3, 4), (3, 5), (3, 6), (3, 7),
    (4, 5), (4, 6), (4, 7),
    (5, 6), (5, 7),
    (6, 7),
]


def test_vocab_sizes_and_special_tokens():
    assert len(V.NODE_TYPES) == 13 and V.NODE_VOCAB_SIZE == 15
    assert (V.NODE_MASK, V.NODE_PAD) == (13, 14)
    assert len(V.RELATIONS) == 10 and V.EDGE_VOCAB_SIZE == 13
    assert (V.EDGE_NO_EDGE, V.EDGE_MASK, V.EDGE_PAD) == (10, 11, 12)
    assert V.NODE_TYPES[V.SECOND_ROOM] == "SecondRoom" and V.NODE_TYPES[V.ENTRANCE] == "Entrance"
    assert V.RELATIONS[V.INSIDE] == "inside" and V.RELATIONS[V.SURROUNDING] == "surrounding"
    assert len(V.NODE_SHORT) == 13


@pytest.mark.parametrize("n_max,n_edges,seq_len", [(8, 28, 36), (14, 91, 105), (2, 1, 3)])
def test_vocab_config_sizes(n_max, n_edges, seq_len):
    vc = VocabConfig(n_max)
    assert (vc.n_edges, vc.seq_len) == (n_edges, seq_len)


def test_vocab_config_accepts_numpy_integers():
    vc = VocabConfig(np.int64(8))
    assert vc == RPLAN_VOCAB and type(vc.n_max) is int and hash(vc) == hash(RPLAN_VOCAB)


@pytest.mark.parametrize("bad", [0, 1, -3, 2.5, "8", True, np.float64(8.0)])
def test_vocab_config_rejects_bad_n_max(bad):
    with pytest.raises(ValueError):
        VocabConfig(bad)


def test_appendix_b_table():
    assert [RPLAN_VOCAB.pos_to_pair(p) for p in range(28)] == APPENDIX_B
    for pos, (i, j) in enumerate(APPENDIX_B):
        assert RPLAN_VOCAB.pair_to_pos(i, j) == pos
        assert RPLAN_VOCAB.pair_to_pos(j, i) == pos  # swapped first
    assert RPLAN_VOCAB.edge_pairs.tolist() == [list(p) for p in APPENDIX_B]


@pytest.mark.parametrize("n_max", range(2, 15))
def test_position_maps_are_inverse(n_max):
    vc = VocabConfig(n_max)
    seen = set()
    for i in range(n_max):
        for j in range(i + 1, n_max):
            pos = vc.pair_to_pos(i, j)
            assert 0 <= pos < vc.n_edges and vc.pos_to_pair(pos) == (i, j)
            assert vc.pair_pos_table[i, j] == vc.pair_pos_table[j, i] == pos
            seen.add(pos)
    assert seen == set(range(vc.n_edges))
    assert (np.diag(vc.pair_pos_table) == -1).all()


def test_position_map_errors():
    with pytest.raises(ValueError):
        RPLAN_VOCAB.pair_to_pos(3, 3)
    with pytest.raises(ValueError):
        RPLAN_VOCAB.pair_to_pos(0, 8)
    with pytest.raises(ValueError):
        RPLAN_VOCAB.pos_to_pair(28)
    with pytest.raises(ValueError):
        RPLAN_VOCAB.pos_to_pair(-1)


@pytest.mark.parametrize("rooms,real", [(1, 1), (4, 10), (5, 15), (6, 21), (7, 28), (8, 36)])
def test_pad_mask_counts(rooms, real):
    mask = RPLAN_VOCAB.pad_mask(rooms)
    assert mask.dtype == bool and mask.shape == (36,)
    assert mask.sum() == real == RPLAN_VOCAB.num_real(rooms)
    assert mask[:rooms].all() and not mask[rooms:8].any()


def test_pad_mask_four_rooms_appendix_b():
    mask = RPLAN_VOCAB.pad_mask(4)
    assert np.flatnonzero(mask).tolist() == [0, 1, 2, 3, 8, 9, 10, 15, 16, 21]
    five = RPLAN_VOCAB.pad_mask(5)
    assert sorted(set(np.flatnonzero(five)) - set(np.flatnonzero(mask))) == [4, 11, 17, 22, 26]


@pytest.mark.parametrize("bad", [0, 9])
def test_pad_mask_range(bad):
    with pytest.raises(ValueError):
        RPLAN_VOCAB.pad_mask(bad)


def test_pad_mask_table_row_zero_is_all_pad():
    assert not RPLAN_VOCAB.pad_mask_table[0].any()


def test_invert_relation():
    pairs = {"left-above": "right-below", "left-below": "right-above", "left-of": "right-of",
             "above": "below", "inside": "surrounding"}
    for a, b in pairs.items():
        ia, ib = V.RELATIONS.index(a), V.RELATIONS.index(b)
        assert V.invert_relation(ia) == ib and V.invert_relation(ib) == ia
    for r in range(10):
        assert V.invert_relation(V.invert_relation(r)) == r == 9 - V.invert_relation(r)
        # The inverse flips both axes of the relation.
        assert V.REL_H[V.invert_relation(r)] == -V.REL_H[r]
        assert V.REL_V[V.invert_relation(r)] == -V.REL_V[r]
    for bad in (-1, 10, 11):
        with pytest.raises(ValueError):
            V.invert_relation(bad)


def test_relation_axes_match_names():
    for r, name in enumerate(V.RELATIONS):
        assert (V.REL_H[r] == -1) == ("left" in name)
        assert (V.REL_H[r] == 1) == ("right" in name)
        assert (V.REL_V[r] == -1) == ("above" in name)
        assert (V.REL_V[r] == 1) == ("below" in name)


def test_forbidden_pairs_appendix_c():
    per_inner = {0: 11, 1: 10, 2: 9, 3: 1, 4: 7, 5: 6, 6: 3, 7: 3, 8: 3, 9: 5, 10: 10, 11: 1}
    assert len(V.FORBIDDEN_INSIDE) == 69
    for inner, count in per_inner.items():
        assert sum(1 for a, _ in V.FORBIDDEN_INSIDE if a == inner) == count
    assert all(V.WALL_IN not in pair for pair in V.FORBIDDEN_INSIDE)
    assert (V.MASTER_ROOM, V.LIVING_ROOM) not in V.FORBIDDEN_INSIDE  # deliberately allowed
    assert (V.LIVING_ROOM, V.BATHROOM) in V.FORBIDDEN_INSIDE
    assert (V.BATHROOM, V.ENTRANCE) in V.FORBIDDEN_INSIDE
    assert (V.STORAGE, V.BALCONY) in V.FORBIDDEN_INSIDE
    assert all(a != b for a, b in V.FORBIDDEN_INSIDE)
    table = V.FORBIDDEN_INSIDE_TABLE
    assert table.shape == (13, 13) and table.sum() == 69
    assert {(int(a), int(b)) for a, b in zip(*np.nonzero(table))} == V.FORBIDDEN_INSIDE
